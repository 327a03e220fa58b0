"""Real servers for the tests: redis-server and PostgreSQL, started from their binaries.

When ``SCIM_TEST_REDIS_URL`` / ``SCIM_TEST_DATABASE_URL`` name a running server the tests
use it; otherwise they start a private one on a free port under a temporary folder and
stop it at the end. No mocks: the bus and the store are tested against what runs in
production.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_HANDED_OUT: set[int] = set()
_PICK = random.Random(os.getpid())


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A loopback port nothing listens on, for a server started later; never the same twice.

    Taken from below the kernel's ephemeral range: a port from ``bind(0)`` is an ephemeral
    one, and in the seconds before a stack's service binds it any outgoing connection (a
    client, a pool) may take it as its local port; the service then fails with EADDRINUSE
    (seen in CI: a sweeper's metrics port). No connection is given a port below the range.
    """
    low = _ephemeral_low()
    if low - 1024 < 5000:  # a range that starts too low leaves no room below it
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    while True:
        port = _PICK.randrange(max(1024, low - 20000), low)
        if port in _HANDED_OUT:
            continue
        _HANDED_OUT.add(port)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class RedisServer:
    """A private redis-server with append-only persistence that a test can stop and restart.
    It requires a password, as every Redis scimbus starts does: the URL carries it."""

    def __init__(self, data_dir: Path | None = None, port: int | None = None, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (make test installs it: apt-get install redis-server)")
        self.binary = binary
        self.port = port or free_port()
        self.owns_dir = data_dir is None
        self.dir = data_dir or Path(tempfile.mkdtemp(prefix="scimbus-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.password = password or secrets.token_urlsafe(16)
        (self.dir / "auth.conf").write_text(f"requirepass {self.password}\n")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, str(self.dir / "auth.conf"), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        _terminate(self.proc, 10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self.owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


def _terminate(proc: subprocess.Popen | None, timeout: float, sig: int = signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def redis_server(data_dir: Path | None = None, port: int | None = None, password: str | None = None
                 ) -> Iterator[str]:
    """A private redis-server with append-only persistence and a password; yields its URL."""
    server = RedisServer(data_dir, port, password)
    server.start()
    try:
        yield server.url
    finally:
        server.close()


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    path = found[0] if found else shutil.which(name)
    if not path:
        raise RuntimeError(f"PostgreSQL's {name} is not installed (make test installs postgresql)")
    return path


def _as_postgres_user() -> tuple[dict, int | None]:
    """initdb refuses to run as root: run the cluster as the 'postgres' (or 'nobody') user."""
    if os.geteuid() != 0:
        return {}, None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            entry = pwd.getpwnam(name)
            return {"user": entry.pw_uid, "group": entry.pw_gid}, entry.pw_uid
    raise RuntimeError("running as root and no unprivileged user exists to run PostgreSQL")


class PostgresServer:
    """A private PostgreSQL cluster in a temporary folder that a test can stop and restart.

    ``durable``: flush as shipped (PostgreSQL's defaults, which compose.yaml and the
    Kubernetes manifests keep): every commit waits for its WAL to reach the disk. The
    benchmarks measure that; the tests, which never crash the machine, skip the flushes."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="scimbus-pg-"))
        self.folder.chmod(0o755)
        self.data = self.folder / "data"
        self.ids, uid = _as_postgres_user()
        if uid is not None:
            os.chown(self.folder, uid, -1)
        subprocess.run([_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync",
                        "-E", "UTF8", "--locale", "C"], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, **self.ids)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/scimbus"

    def start(self) -> None:
        log = open(self.folder / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [_pg_bin("postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.folder),
             # Without ``durable``, fsync off: the tests never crash the machine, only the
             # server. Commits stay synchronous: a commit PostgreSQL acknowledged survives its
             # process's death, which the restart tests rely on (asynchronous commits lost
             # acknowledged writes).
             "-c", "listen_addresses=127.0.0.1", "-c", "synchronous_commit=on", "-c", "max_connections=200",
             *(() if self.durable else ("-c", "fsync=off", "-c", "full_page_writes=off"))],
            stdout=subprocess.DEVNULL, stderr=log, **self.ids,
        )
        log.close()
        wait_for_port(self.port, proc=self.proc)
        for _ in range(100):  # the port opens a moment before the server accepts logins
            done = subprocess.run([_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                                   "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'scimbus'"],
                                  capture_output=True, text=True)
            if done.returncode == 0:
                if done.stdout.strip() != "1":
                    subprocess.run([_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                                    "-c", "CREATE DATABASE scimbus"], check=True, capture_output=True)
                return
            time.sleep(0.1)
        raise TimeoutError("PostgreSQL did not accept logins")

    def stop(self) -> None:
        # SIGINT: the fast shutdown of a service restart. SIGTERM's smart shutdown waits for
        # every client to leave, which a connection pool under load never does.
        _terminate(self.proc, 20, signal.SIGINT)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A private PostgreSQL cluster in a temporary folder; yields a SQLAlchemy URL."""
    server = PostgresServer()
    server.start()
    try:
        yield server.url
    finally:
        server.close()
