"""The peer the bench compares with: scim2-server (PyPI), in memory, on loopback.

It lives in its own virtualenv under ``var/bench-peer/`` (its pydantic and scim2-models pins
must not meet ours), created with ``python -m venv`` + pip on first use and reused after.

Entra's request shapes are what the bench sends to scimbus. Before the peer's run,
:func:`probe_dialect` sends each Entra shape the workload uses to the peer once; where the
peer refuses one, the peer (and only the peer) is sent the closest shape it accepts, and
the report says which and why. The probe's requests are not counted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.client import Client, HTTPError, Response

ROOT = Path(__file__).resolve().parent.parent
PEER_PACKAGE = "scim2-server==0.8.3"
PEER_DIR = ROOT / "var" / "bench-peer"


def peer_command(venv: Path) -> Path:
    return venv / "bin" / "scim2-server"


def ensure_peer(venv: Path | None = None, package: str = PEER_PACKAGE, log=print) -> Path:
    """The ``scim2-server`` executable of the peer's virtualenv, installed on first use."""
    venv = venv or PEER_DIR / "venv"
    exe = peer_command(venv)
    marker = venv / ".bench-installed"
    if exe.exists() and marker.exists() and marker.read_text().strip() == package:
        return exe
    log(f"bench: installing {package} into {venv} (first use) ...")
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", None) or sys.executable
    if not (venv / "bin" / "python").exists():
        subprocess.run([base, "-m", "venv", str(venv)], check=True, capture_output=True, text=True)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                          "--disable-pip-version-check", package], capture_output=True, text=True)
    if pip.returncode != 0 or not exe.exists():
        raise RuntimeError(f"pip install {package} failed:\n{pip.stdout[-2000:]}{pip.stderr[-2000:]}")
    marker.write_text(package + "\n")
    return exe


@dataclass
class Peer:
    proc: subprocess.Popen
    url: str
    token: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# The peer's own CLI (``scim2-server``) with one change when asked: the listen backlog. Its
# server is wsgiref's, HTTP/1.0 (a new connection per request), on socketserver's default
# backlog of 5; with 16 clients the kernel drops SYNs (ListenOverflows) and each dropped
# client waits 1 s before it retries, which would measure that default, not the server.
_LAUNCH = ("import sys, socketserver; socketserver.TCPServer.request_queue_size = int(sys.argv.pop(1)); "
           "sys.argv[0] = 'scim2-server'; from scim2_server.testserver.cli import main; sys.exit(main())")


@contextlib.contextmanager
def running_peer(exe: Path, tmp: Path, timeout: float = 30.0, backlog: int | None = None) -> Iterator[Peer]:
    """The peer on a free loopback port; ``backlog``: its listen backlog (None: the CLI's own, 5)."""
    from tests.support.servers import free_port, wait_for_port

    port = free_port()
    token = secrets.token_hex(16)
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / "peer.log"
    argv = [str(exe)] if backlog is None else [str(exe.parent / "python"), "-c", _LAUNCH, str(backlog)]
    argv += ["--port", str(port), "--hostname", "127.0.0.1", "--bearer-token", token]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    peer = Peer(proc, f"http://127.0.0.1:{port}/v2", token, log_path)
    try:
        wait_for_port(port, timeout=timeout, proc=proc)
        yield peer
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # its CLI stops on KeyboardInterrupt
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# --------------------------------------------------------------------------- dialects


@dataclass
class Dialect:
    """How one server is sent the workload's requests: Entra's shapes, or the closest accepted."""

    name: str = "entra"
    enterprise_attributes: bool = True  # POST /Users carries enterprise employeeNumber/department
    adscim_group_schema: bool = True  # POST /Groups lists the ADSCIM URI next to the core Group
    bare_manager: bool = True  # manager PATCH value: the manager's id as a bare string (P8)
    string_active: bool = True  # disable with "False" (string), Entra's default dialect
    capitalised_ops: bool = True  # "Add"/"Replace" rather than "add"/"replace"
    notes: list[str] = field(default_factory=list)  # what the server refused, and what it was sent

    def op(self, name: str) -> str:
        return name if self.capitalised_ops else name.lower()

    def manager_value(self, manager_id: str):
        return manager_id if self.bare_manager else {"value": manager_id}

    def inactive(self):
        return "False" if self.string_active else False

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


ENTRA = Dialect()


def _why(r: Response | None, exc: Exception | None = None) -> str:
    if exc is not None:
        return f"{type(exc).__name__}: {exc}"
    detail = r.text
    with contextlib.suppress(ValueError, AttributeError):
        body = r.json()
        detail = str(body.get("detail") or body)
    detail = " ".join(detail.split())
    return f"HTTP {r.status_code} {detail[:140]}"


def probe_dialect(client: Client) -> Dialect:
    """Send each Entra shape once; fall back to the closest accepted shape where refused."""
    from bench.load import ENTERPRISE, GROUP, group_body, patch_body, user_body

    d = Dialect(name="peer")
    tag = uuid.uuid4().hex[:8]

    def send(method: str, url: str, body: dict | None = None) -> tuple[Response | None, str | None]:
        try:
            r = client.request(method, url, json=body) if body is not None else client.request(method, url)
        except HTTPError as exc:
            return None, _why(None, exc)
        return r, (None if r.status_code < 300 else _why(r))

    def user_after(uid: str) -> dict:
        r, why = send("GET", f"/Users/{uid}")
        return r.json() if why is None else {}

    # create with the enterprise extension
    def create(name: str) -> str | None:
        nonlocal d
        r, why = send("POST", "/Users", user_body(name, d))
        if why is None:
            return r.json().get("id")
        if d.enterprise_attributes:
            d.enterprise_attributes = False
            r2, why2 = send("POST", "/Users", user_body(name, d))
            d.notes.append(f"POST /Users with the enterprise extension's attributes: {why}; "
                           + ("sent without them" if why2 is None else f"without them too: {why2}"))
            return r2.json().get("id") if why2 is None else None
        return None

    users = [create(f"probe-{tag}-{i}@contoso.com") for i in range(3)]
    if not all(users):
        d.notes.append("POST /Users refused in every shape tried: the peer's creates count as peer errors")
        return d
    uid, mid, other = users

    # userName eq
    r, why = send("GET", f'/Users?filter=userName eq "probe-{tag}-0@contoso.com"')
    if why is not None or r.json().get("totalResults") != 1:
        d.notes.append(f'GET /Users?filter=userName eq "…": {why or r.text[:140]} '
                       "(no other shape: counted as peer errors)")

    # Replace with a capitalised op
    r, why = send("PATCH", f"/Users/{uid}", patch_body({"op": "Replace", "path": "name.familyName",
                                                        "value": "P"}))
    if why is not None:
        d.capitalised_ops = False
        d.notes.append(f'PATCH "op": "Replace" (capitalised, Entra\'s default): {why}; sent lower-case ops')

    # disable with the string "False"
    r, why = send("PATCH", f"/Users/{uid}", patch_body({"op": d.op("Replace"), "path": "active",
                                                        "value": "False"}))
    if why is None and user_after(uid).get("active") is not False:
        why = f"answered {r.status_code} but the user reads back active={user_after(uid).get('active')!r}"
    if why is not None:
        d.string_active = False
        d.notes.append(f'PATCH active "False" (string, Entra\'s default): {why}; sent the boolean false')

    # manager as a bare id on the URN path (P8)
    r, why = send("PATCH", f"/Users/{uid}", patch_body({"op": d.op("Add"), "path": f"{ENTERPRISE}:manager",
                                                         "value": mid}))
    got = (user_after(uid).get(ENTERPRISE) or {}).get("manager") if why is None else None
    if why is None and not (isinstance(got, dict) and got.get("value") == mid):
        why = f"answered {r.status_code} but manager reads back {got!r}"
    if why is not None:
        d.bare_manager = False
        r, why2 = send("PATCH", f"/Users/{uid}", patch_body({"op": d.op("Add"), "value": {"value": mid},
                                                             "path": f"{ENTERPRISE}:manager"}))
        d.notes.append(f"PATCH {ENTERPRISE}:manager with the bare id string (Entra P8): {why}; "
                       'sent {"value": id}'
                       + ("" if why2 is None else f" (refused too: {why2})"))

    # group create with the ADSCIM URI
    r, why = send("POST", "/Groups", group_body(f"probe-{tag}-g", d))
    if why is not None:
        d.adscim_group_schema = False
        r, why2 = send("POST", "/Groups", group_body(f"probe-{tag}-g", d))
        d.notes.append("POST /Groups with schemas [core Group, ADSCIM Group] (Entra's tutorial body): "
                       f"{why}; sent schemas [{GROUP}] only"
                       + ("" if why2 is None else f" (refused too: {why2})"))
        if why2 is not None:
            return d
    gid = r.json().get("id")

    # member add
    r, why = send("PATCH", f"/Groups/{gid}", patch_body({"op": d.op("Add"), "path": "members",
                                                          "value": [{"value": other}]}))
    if why is None:
        g, why = send("GET", f"/Groups/{gid}")
        if why is None and other not in {m.get("value") for m in g.json().get("members") or []}:
            why = "answered success but the member is not in the group"
    if why is not None:
        d.notes.append(f'PATCH "Add" members [{{"value": id}}]: {why} '
                       "(no closer shape: counted as peer errors)")
    return d


