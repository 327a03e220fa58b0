"""Slow uploads against the real gateway (issue 16, medium 7): nginx running the shared routing
template inside the local run's main configuration, in front of a stand-in upstream that
counts what reaches it. Forty clients that send 3 MiB of a 4 MB body and stall must not hold
the gateway's memory nor all its connections, must never reach the upstream, and must not
keep a normal client out."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.runtime.local_run import render_template
from tests.support.deploy_checks import ROOT, nginx_folder, running_nginx
from tests.support.servers import free_port

pytestmark = pytest.mark.servers  # starts servers of its own (tests/conftest.py)

STALLED = 40
PER_CLIENT = 32  # limit_conn of the template
BODY_TIMEOUT = 10  # client_body_timeout of the template, seconds
SENT = 3 * 1024 * 1024
HEADER = ("POST /scim/Users HTTP/1.1\r\nHost: scim.test\r\nAuthorization: Bearer x\r\n"
          "Content-Type: application/scim+json\r\nContent-Length: 4000000\r\n\r\n").encode()


class _Upstream(BaseHTTPRequestHandler):
    """The front and the reader: reads the body, answers 200, counts the requests it saw."""

    seen: list[int] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        _Upstream.seen.append(length)
        body = b'{"ok":true}'
        self.send_response(200)
        self.send_header("Content-Type", "application/scim+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Upstream)
    _Upstream.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.fixture
def gateway(upstream) -> Iterator[tuple[int, subprocess.Popen, Path]]:
    """nginx with the local run's main configuration and the shared routing template."""
    folder = nginx_folder()
    (folder / "tmp").mkdir()
    port = free_port()
    env = {"SCIM_NGINX_DIR": str(folder), "SCIM_SOCKET_DIR": str(folder), "SCIM_GATEWAY_LISTEN": f"127.0.0.1:{port}",
           "SCIM_FRONT_UPSTREAM": f"127.0.0.1:{upstream}", "SCIM_READER_UPSTREAM": f"127.0.0.1:{upstream}",
           "SCIM_MAX_BODY": "4096k", "SCIM_GATEWAY_TLS_INCLUDE": str(folder / "tls/*.conf")}
    (folder / "scimbus.conf").write_text(
        render_template((ROOT / "deploy/nginx/templates/scimbus.conf.template").read_text(), env))
    (folder / "nginx.conf").write_text(render_template((ROOT / "deploy/nginx/local.conf.template").read_text(), env))
    try:
        with running_nginx(folder, port) as proc:
            yield port, proc, folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _workers(master: int) -> list[str]:
    """The pids of nginx's worker processes (children of its master)."""
    pids = []
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(master):
                pids.append(pid)
        except OSError:
            continue
    return pids


def _workers_rss_kib(master: int) -> int:
    total = 0
    for pid in _workers(master):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def _body_files(master: int, folder: Path) -> int:
    """Temporary body files nginx's workers hold open (it unlinks each as it creates it)."""
    links = [os.readlink(fd) for pid in _workers(master) for fd in Path(f"/proc/{pid}/fd").iterdir()]
    return sum(1 for link in links if link.startswith(f"{folder}/body/"))


def _stall(port: int) -> socket.socket:
    """A client from 127.0.0.1 that sends the header and 3 MiB of its body, then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=("127.0.0.1", 0))
    try:
        sock.sendall(HEADER + b"x" * SENT)
    except OSError:
        pass  # refused at the header (429): nginx closed its side while we sent
    return sock


def _answer_of(sock: socket.socket, wait: float) -> bytes | None:
    """What the gateway said on this connection within ``wait`` seconds (b"" = closed), else None."""
    sock.settimeout(wait)
    try:
        return sock.recv(4096)
    except TimeoutError:
        return None
    except OSError:
        return b""


def _request(port: int, source: str, body: bytes = b'{"userName":"a"}') -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0)) as sock:
        sock.sendall((f"POST /scim/Users HTTP/1.1\r\nHost: scim.test\r\nContent-Length: {len(body)}\r\n"
                      "Connection: close\r\n\r\n").encode() + body)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer.decode(errors="replace").split("\r\n", 1)[0]


def test_forty_stalled_large_uploads_hold_neither_memory_nor_the_upstream_and_others_get_through(gateway):
    port, proc, folder = gateway
    baseline = _workers_rss_kib(proc.pid)
    clients = [_stall(port) for _ in range(STALLED)]
    try:
        time.sleep(1)  # let nginx read what was sent
        grew_mib = (_workers_rss_kib(proc.pid) - baseline) / 1024
        answers = [_answer_of(c, 0.2) for c in clients]
        refused = [a for a in answers if a is not None]
        # The bodies wait on disk, not in memory: before, each of the forty held its 3 MiB.
        assert grew_mib < 16, f"nginx's workers grew {grew_mib:.0f} MiB"
        assert _body_files(proc.pid, folder) == PER_CLIENT
        # One address holds at most 32 requests; the rest are told to retry.
        assert len(refused) == STALLED - PER_CLIENT, answers
        assert all(a.startswith(b"HTTP/1.1 429") and b"Retry-After: 5" in a for a in refused)
        # Another client gets through at once; the stalling address itself is at its bound.
        assert _request(port, "127.0.0.2") == "HTTP/1.1 200 OK"
        assert _request(port, "127.0.0.1") == "HTTP/1.1 429 Too Many Requests"
        # A body that stops coming is dropped after client_body_timeout, never passed on whole.
        held = [c for c, a in zip(clients, answers) if a is None]
        deadline = time.monotonic() + BODY_TIMEOUT + 5
        for sock in held:
            assert _answer_of(sock, max(0.1, deadline - time.monotonic())) is not None, "a stalled upload stays held"
        assert _Upstream.seen == [len(b'{"userName":"a"}')]
        assert _request(port, "127.0.0.1") == "HTTP/1.1 200 OK"
    finally:
        for sock in clients:
            sock.close()
