"""``scimbus run``: the whole stack in the foreground, for one machine (``make run``).

Starts a Redis of its own (append-only, data under var/redis, its own port, a password
generated on first run and kept in var/redis-password; none when ``SCIM_REDIS_URL`` names
one), the front,
the reader, a worker pool and the nginx gateway under honcho, after creating the token
and migrating the database. Ctrl-C or SIGTERM stops every process it started, in the order
they depend on each other (``services.runtime.ordered_stop``); so does the death of the process that
started it (``make`` does not forward SIGTERM to its children).

``--workers 0`` (and ``SCIM_DELIVERER_PROCESSES=0``) starts no worker (deliverer): a scaler
outside starts them when their queue holds a job, as KEDA does (tests/support/scaler.py),
and the front then stays ready without one.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import urllib.error
from pathlib import Path


from libs.config import (REDIS_PASSWORD_FILE, load_settings, local_redis_url, read_or_create_secret,
                         read_secret)
from services.runtime.ordered_stop import OrderedManager, Printer, parse_procfile
from services.runtime.probe import LOOPBACK

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"

DEFAULT_PORTS = {
    "SCIM_PORT": "8585", "SCIM_REDIS_PORT": "6389", "SCIM_FRONT_PORT": "8601",
    "SCIM_READER_PORT": "8602", "SCIM_WORKER_METRICS_PORT": "8603",
    "SCIM_DELIVERER_METRICS_PORT": "8604", "SCIM_SWEEPER_METRICS_PORT": "8605",
}


SCALED_ROLES = {"worker": "SCIM_WORKER_PROCESSES", "deliverer": "SCIM_DELIVERER_PROCESSES"}
"""Pool roles the local run starts none of when their count is 0, leaving them to a scaler."""


def left_to_a_scaler(env: dict[str, str]) -> set[str]:
    return {role for role, variable in SCALED_ROLES.items() if env.get(variable, "").strip() == "0"}


def render_template(text: str, env: dict[str, str]) -> str:
    """envsubst for ``${SCIM_*}`` names only, so nginx's own ``$variables`` stay untouched."""
    def sub(m: re.Match) -> str:
        if m.group(1) not in env:
            raise KeyError(f"template variable {m.group(1)} is not set")
        return env[m.group(1)]
    return re.sub(r"\$\{(SCIM_[A-Z0-9_]+)\}", sub, text)


def build_env(workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()}
    for key, value in DEFAULT_PORTS.items():
        env.setdefault(key, value)
    var_dir = Path(env.get("SCIM_VAR_DIR", ROOT / "var")).resolve()
    env["SCIM_VAR_DIR"] = str(var_dir)
    env["SCIM_OWN_REDIS"] = "" if env.get("SCIM_REDIS_URL") else "1"
    if env["SCIM_OWN_REDIS"]:
        # Every role reaches it with the password (issue 16: a Redis anyone on the host could
        # write to ran their code in the workers); redis-server reads it from a file, never
        # from its command line, which every local user can read in ps.
        password = read_or_create_secret(var_dir / REDIS_PASSWORD_FILE)
        env["SCIM_REDIS_URL"] = local_redis_url(password, env["SCIM_REDIS_PORT"])
    env["SCIM_WORKER_PROCESSES"] = str(workers)
    if workers == 0:  # no worker until one is started for the first write: the front must not wait for one
        env.setdefault("SCIM_WORKERS_SCALE_TO_ZERO", "true")
    env.setdefault("SCIM_DELIVERER_PROCESSES", "1")
    env["SCIM_NGINX_DIR"] = str(var_dir / "nginx")
    env["SCIM_GATEWAY_LISTEN"] = f"{env.get('SCIM_LISTEN_ADDRESS', '0.0.0.0')}:{env['SCIM_PORT']}"
    settings = load_settings(env)
    env["SCIM_MAX_BODY"] = f"{max(1, settings.max_body_bytes // 1024)}k"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, whatever the umask (it holds a secret)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def prepare(env: dict[str, str]) -> str:
    """Folders, token, migrations, nginx config; returns the token.

    The gateway reaches the front and the reader's processes over unix sockets: on one host they cost
    the kernel about a tenth of a millisecond less per request than loopback TCP (measured:
    the reader's CPU per GET 0.77 against 0.88-0.91 ms, 12-19 % more GETs per second on two
    cores). They sit in a fresh folder of the system's temporary directory that only its
    owner can write, not under ``SCIM_VAR_DIR``: nginx's workers must traverse the path,
    and the var folder (token, SQLite file) may rightly be closed to other users. Each
    service keeps its loopback port for metrics and probes."""
    var_dir = Path(env["SCIM_VAR_DIR"])
    for sub in ("redis", "nginx/tmp", "metrics"):
        (var_dir / sub).mkdir(parents=True, exist_ok=True)
    if env["SCIM_OWN_REDIS"]:
        write_private(var_dir / "redis" / "auth.conf",
                      f"requirepass {read_secret(var_dir / REDIS_PASSWORD_FILE)}\n")
    settings = load_settings(env)
    from libs.security import key_encryption
    from libs.store.migrate import upgrade

    if not settings.key_encryption_key:  # var/key-encryption-key seals the OAuth signing keys
        key_encryption.create_local_key(settings.var_dir)
    upgrade(settings.database, settings=settings)
    nginx_dir = Path(env["SCIM_NGINX_DIR"])
    from libs.security import tls  # issue 5: HTTPS at the gateway when SCIM_TLS / SCIM_TLS_CERT

    env["SCIM_SCHEME"] = tls.configure_gateway(env, settings, nginx_dir)
    # The audience of OAuth client assertions (Settings.public_url): the URL this run serves.
    env.setdefault("SCIM_PUBLIC_URL", f"{env['SCIM_SCHEME']}://127.0.0.1:{env['SCIM_PORT']}")
    sockets = Path(tempfile.mkdtemp(prefix="scimbus-"))
    sockets.chmod(0o755)  # nginx's workers run as nobody when it was started as root
    env["SCIM_SOCKET_DIR"] = str(sockets)
    env["SCIM_FRONT_UPSTREAM"] = f"unix:{sockets}/front.sock"
    # Each reader process listens on a socket of its own (``--worker-sockets``), listed to
    # nginx as one server each: the template's single ``server`` line becomes several.
    # max_fails=0: a socket whose process is (re)starting refuses at once and nginx tries
    # the next; by default it would shun that socket for 10 s (every socket, at start).
    readers = int(env.get("SCIM_HTTP_WORKERS") or "2")
    env["SCIM_READER_UPSTREAM"] = ";\n    server ".join(
        f"unix:{sockets}/reader-{n}.sock max_fails=0" for n in range(readers))
    (nginx_dir / "scimbus.conf").write_text(
        render_template((DEPLOY / "nginx/templates/scimbus.conf.template").read_text(), env))
    (nginx_dir / "nginx.conf").write_text(render_template((DEPLOY / "nginx/local.conf.template").read_text(), env))
    return settings.tokens[0]


READY_PATIENCE = 60.0
"""Seconds after which a stack that is still not ready says which role holds it up."""


def readiness_checks(env: dict[str, str]) -> dict[str, str]:
    """Each role's ``/readyz`` on its loopback port, and the gateway's port where it listens."""
    checks = {role: f"http://127.0.0.1:{env[port]}/readyz" for role, port in (
        ("front", "SCIM_FRONT_PORT"), ("reader", "SCIM_READER_PORT"), ("worker", "SCIM_WORKER_METRICS_PORT"),
        ("deliverer", "SCIM_DELIVERER_METRICS_PORT"), ("sweeper", "SCIM_SWEEPER_METRICS_PORT"))
        if role not in left_to_a_scaler(env)}
    host = env.get("SCIM_LISTEN_ADDRESS") or "0.0.0.0"
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(host, host.strip("[]"))
    checks["gateway"] = f"tcp://{host}:{env['SCIM_PORT']}"
    return checks


def _not_ready(url: str) -> str | None:
    """None when ready, else what the check saw."""
    try:
        if url.startswith("tcp://"):
            host, port = url[len("tcp://"):].rsplit(":", 1)
            socket.create_connection((host, int(port)), timeout=2).close()
            return None
        with LOOPBACK.open(url, timeout=2):
            return None
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read().decode(errors='replace').strip()[:200]}"
    except OSError as exc:
        return f"not answering ({getattr(exc, 'reason', None) or exc})"


def announce_when_ready(checks: dict[str, str], url: str, out=sys.stdout, patience: float = READY_PATIENCE,
                        stop: threading.Event | None = None) -> None:
    """Print one line once every role is ready, so an administrator knows when a write will be taken.

    Until then the gateway may answer 502 (a service still loading) or the front 503 (no
    worker on the queue yet). A stack still not ready after ``patience`` seconds gets a
    line naming each role that holds it up, and the ready line when it comes.
    """
    started, complained = time.monotonic(), False
    stop = stop or threading.Event()
    while not stop.is_set():
        pending = {role: problem for role, check in checks.items() if (problem := _not_ready(check))}
        if not pending:
            print(f"scimbus: ready after {time.monotonic() - started:.1f} s, serving {url}", file=out, flush=True)
            return
        if not complained and time.monotonic() - started > patience:
            complained = True
            print(f"scimbus: not ready after {patience:.0f} s: "
                  + "; ".join(f"{role}: {problem}" for role, problem in sorted(pending.items())), file=out, flush=True)
        stop.wait(0.25)


def _exit_with_parent(parent: int) -> None:
    while True:
        time.sleep(1)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def run(workers: int = 2) -> int:
    missing = [b for b in ("redis-server", "nginx") if shutil.which(b) is None]
    if missing:
        print(f"missing programs: {', '.join(missing)} (make run installs them when run as root)", file=sys.stderr)
        return 2
    env = build_env(workers)
    token = prepare(env)
    url = f"{env['SCIM_SCHEME']}://127.0.0.1:{env['SCIM_PORT']}/scim"
    print(f"scimbus: starting, to serve {url}\nscimbus: bearer token (Entra's Secret Token): {token}", flush=True)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    stopped = threading.Event()  # no readiness talk while the stack goes down
    threading.Thread(target=announce_when_ready, args=(readiness_checks(env), url),
                     kwargs={"stop": stopped}, daemon=True).start()
    procfile = parse_procfile((DEPLOY / "Procfile").read_text())
    manager = OrderedManager(Printer(sys.stdout))
    for name, entry in procfile.processes.items():
        if name == "redis" and not env["SCIM_OWN_REDIS"]:
            continue  # SCIM_REDIS_URL names a Redis of the operator's: use it, start none
        if name in left_to_a_scaler(env):
            continue
        manager.add_process(name, render_template(entry, env), env=env, cwd=str(ROOT))
    try:
        manager.loop()
    finally:
        stopped.set()
        shutil.rmtree(env["SCIM_SOCKET_DIR"], ignore_errors=True)
    return manager.returncode or 0
