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
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def redis_server(data_dir: Path | None = None, port: int | None = None) -> Iterator[str]:
    """A private redis-server with append-only persistence; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (make test installs it: apt-get install redis-server)")
    port = port or free_port()
    folder = data_dir or Path(tempfile.mkdtemp(prefix="scimbus-redis-"))
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder), "--appendonly", "yes",
         "--appendfsync", "everysec", "--save", "", "--daemonize", "no", "--logfile", str(folder / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
        if data_dir is None:
            shutil.rmtree(folder, ignore_errors=True)


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


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A private PostgreSQL cluster in a temporary folder; yields a SQLAlchemy URL."""
    port = free_port()
    folder = Path(tempfile.mkdtemp(prefix="scimbus-pg-"))
    folder.chmod(0o755)
    data = folder / "data"
    ids, uid = _as_postgres_user()
    if uid is not None:
        os.chown(folder, uid, -1)
    run = dict(check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **ids)
    subprocess.run([_pg_bin("initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync",
                    "-E", "UTF8", "--locale", "C"], **run)
    proc = subprocess.Popen(
        [_pg_bin("postgres"), "-D", str(data), "-p", str(port), "-k", str(folder), "-c", "listen_addresses=127.0.0.1",
         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200"],
        stdout=subprocess.DEVNULL, stderr=open(folder / "postgres.log", "wb"), **ids,
    )
    try:
        wait_for_port(port, proc=proc)
        for _ in range(100):  # the port opens a moment before the server accepts logins
            done = subprocess.run([_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
                                   "-c", "CREATE DATABASE scimbus"], capture_output=True)
            if done.returncode == 0:
                break
            time.sleep(0.1)
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/scimbus"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(20)
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(folder, ignore_errors=True)
