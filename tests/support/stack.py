"""The whole stack, started the way an administrator starts it: ``scimbus run``.

Gateway (nginx), front and reader (gunicorn), a worker pool and a private Redis, on free
ports under a temporary var folder, against SQLite or PostgreSQL. Tests drive it over
HTTP through the gateway, exactly as Entra's agent would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-" + "x" * 24


@dataclass
class Stack:
    proc: subprocess.Popen
    var_dir: Path
    port: int
    redis_port: int
    ports: dict[str, int]
    token: str
    log_path: Path
    env: dict[str, str] | None = None
    scheme: str = "http"
    client_cert: tuple[str, str] | None = None

    def scimbus(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run an operator command (``scimbus tokens …``) against this stack's database."""
        from libs.security.credentials import MISS_REFRESH

        done = subprocess.run([sys.executable, "-m", "services.cli", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=60, check=check)
        if args[:2] == ("tokens", "create"):
            time.sleep(MISS_REFRESH + 0.05)  # see create_token
        return done

    def create_token(self, name: str, app: str | None = None, scopes: str = "read,write", *,
                     client: bool = False, public_key: str | None = None, expires_days: float = 0) -> dict:
        """A new credential, made in-process as ``scimbus tokens create`` makes it (without a
        second interpreter start per token): a dict with ``token`` or ``client_id``/``client_secret``."""
        from datetime import timedelta

        from libs.config import load_settings
        from libs.security.credentials import MISS_REFRESH, CredentialAdmin, parse_scopes
        from libs.store.session import create_engine_from_url

        settings = load_settings(self.env)
        engine = create_engine_from_url(settings.database)
        try:
            cred, secret = CredentialAdmin(engine).create(
                app or settings.default_app, name, scopes=parse_scopes(scopes),
                kind="client" if client or public_key else "token", public_key=public_key,
                expires_in=timedelta(days=expires_days) if expires_days else None)
        finally:
            engine.dispose()
        # Every service re-reads its credentials on a miss at most every MISS_REFRESH seconds: a
        # copy loaded just before this insert could otherwise refuse the token for that long.
        time.sleep(MISS_REFRESH + 0.05)
        if cred.kind == "client":
            return {"client_id": cred.id, "client_secret": secret}
        return {"token": secret}

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/scim"

    def client(self, token: str | None = None, **kw) -> httpx.Client:
        headers = {"Content-Type": "application/scim+json"}
        headers["Authorization"] = f"Bearer {token or self.token}"
        if self.scheme == "https":  # the local run's self-signed certificate (SCIM_TLS=1)
            kw.setdefault("verify", _ssl_context(self.var_dir / "tls" / "cert.pem", self.client_cert))
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kw)

    @property
    def redis_url(self) -> str:
        """The stack's Redis, with the password ``scimbus run`` generated for it (or the one named)."""
        from libs.config import REDIS_PASSWORD_FILE, local_redis_url, read_secret

        if self.env and self.env.get("SCIM_REDIS_URL"):
            return self.env["SCIM_REDIS_URL"]
        return local_redis_url(read_secret(self.var_dir / REDIS_PASSWORD_FILE) or "", self.redis_port)

    def redis(self):
        from libs.bus.connection import connect

        return connect(self.redis_url, socket_connect_timeout=2)

    def worker_pids(self) -> list[int]:
        """PIDs of the live RQ workers (the pool's children), from their Redis registry."""
        from redis.exceptions import RedisError
        from rq import Worker

        try:
            return [w.pid for w in Worker.all(connection=self.redis()) if w.pid]
        except RedisError:
            return []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def diagnostics(self, lines: int = 15) -> str:
        """The tails of the stack's and the gateway's logs, for a failure in CI (where the files are gone)."""
        parts = []
        for name, path in (("stack log", self.log_path), ("gateway error log", self.var_dir / "nginx" / "error.log")):
            with contextlib.suppress(OSError):
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {name}, last {len(tail)} lines ---\n" + "\n".join(line[:300] for line in tail))
        return "\n".join(parts)


def _ssl_context(cafile: Path, client_cert: tuple[str, str] | None = None):
    import ssl

    ctx = ssl.create_default_context(cafile=str(cafile))
    if client_cert:  # mTLS (SCIM_TLS_CLIENT_CA)
        ctx.load_cert_chain(*client_cert)
    return ctx


def _front_ready(stack: Stack) -> bool:
    return httpx.get(f"http://127.0.0.1:{stack.ports['SCIM_FRONT_PORT']}/readyz", timeout=5).status_code == 200


def _wait_ready(stack: Stack, timeout: float = 90.0, *, workers: bool = True) -> None:
    """Until a read is answered, the front is ready and (``workers``) a worker listens."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if stack.proc.poll() is not None:
            raise RuntimeError(f"scimbus run exited with {stack.proc.returncode}:\n{stack.log()[-4000:]}")
        with contextlib.suppress(httpx.HTTPError), stack.client() as c:
            last = c.get("/Users", params={"count": 0})
            # The front answers once its master has loaded the app and opened its port
            # (preload_app), which can be after the reader does.
            if last.status_code == 200 and (stack.worker_pids() or not workers) and _front_ready(stack):
                return
        time.sleep(0.2)
    raise TimeoutError(f"stack not ready (last answer {last}):\n{stack.log()[-4000:]}")


@contextlib.contextmanager
def running_stack(tmp: Path, database_url: str | None = None, workers: int = 2,
                  extra_env: dict[str, str] | None = None,
                  client_cert: tuple[str, str] | None = None, wait_ready: bool = True) -> Iterator[Stack]:
    """``workers=0``: no worker is started (nor a deliverer with ``SCIM_DELIVERER_PROCESSES=0``);
    a scaler starts them (tests/support/scaler.py), and the stack is ready without them."""
    ports = {name: free_port() for name in ("SCIM_PORT", "SCIM_REDIS_PORT", "SCIM_FRONT_PORT", "SCIM_READER_PORT",
                                            "SCIM_WORKER_METRICS_PORT", "SCIM_DELIVERER_METRICS_PORT",
                                            "SCIM_SWEEPER_METRICS_PORT")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIM_")}
    env.update({k: str(v) for k, v in ports.items()})
    env.update(SCIM_VAR_DIR=str(tmp), SCIM_TOKEN=TOKEN, SCIM_LISTEN_ADDRESS="127.0.0.1", SCIM_LOG_LEVEL="WARNING",
               SCIM_HTTP_WORKERS="2", SCIM_HTTP_THREADS="8")
    if database_url:
        env["SCIM_DATABASE_URL"] = database_url
    env.update(extra_env or {})
    log_path = tmp / "stack.log"
    tmp.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "run", "--workers", str(workers)],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    scheme = "https" if env.get("SCIM_TLS") == "1" or env.get("SCIM_TLS_CERT") else "http"
    stack = Stack(proc, tmp, ports["SCIM_PORT"], ports["SCIM_REDIS_PORT"], ports, TOKEN, log_path, env, scheme,
                  client_cert)
    try:
        if wait_ready:
            wait_for_port(stack.port, timeout=90, proc=proc)
            _wait_ready(stack, workers=workers > 0)
        yield stack
    except BaseException as exc:  # pytest's own outcomes (fail, skip) are BaseExceptions
        exc.add_note(stack.diagnostics())
        raise
    finally:
        stop(stack)


def stop(stack: Stack, sig: int = signal.SIGTERM, timeout: float = 40) -> list[int]:
    """Stop the stack as an administrator would; returns the processes it left behind."""
    family = descendants(stack.proc.pid)
    if stack.proc.poll() is None:
        stack.proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            stack.proc.wait(timeout)
    deadline = time.monotonic() + 10
    while (left := [p for p in family if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:  # never leak into the next test; the leak itself is asserted by a test
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(stack.proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        stack.proc.wait(5)
    return left


def _stat(pid: int) -> tuple[str, int] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def descendants(root: int) -> list[int]:
    """Every live process below ``root`` (honcho puts each child in its own session)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None:
            children.setdefault(st[1], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out
