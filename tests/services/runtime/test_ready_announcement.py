"""``scimbus run`` announces readiness only when every role answers its probe, and names the
roles that hold it up when that takes long."""

from __future__ import annotations

import io
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.runtime.local_run import announce_when_ready, readiness_checks

pytestmark = pytest.mark.servers  # starts servers of its own (tests/conftest.py)


class _Probe(BaseHTTPRequestHandler):
    ready = False

    def do_GET(self):  # noqa: N802 (http.server's name)
        code, body = (200, b"ok") if type(self).ready else (503, b"no live worker on queue scim-writes")
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _serve(handler) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_role_and_the_gateway_port_are_checked():
    env = {"SCIM_PORT": "1", "SCIM_FRONT_PORT": "2", "SCIM_READER_PORT": "3", "SCIM_WORKER_METRICS_PORT": "4",
           "SCIM_DELIVERER_METRICS_PORT": "5", "SCIM_SWEEPER_METRICS_PORT": "6"}
    assert readiness_checks(env) == {
        "front": "http://127.0.0.1:2/readyz", "reader": "http://127.0.0.1:3/readyz",
        "worker": "http://127.0.0.1:4/readyz", "deliverer": "http://127.0.0.1:5/readyz",
        "sweeper": "http://127.0.0.1:6/readyz", "gateway": "tcp://127.0.0.1:1"}
    # the gateway is checked where it listens
    assert readiness_checks({**env, "SCIM_LISTEN_ADDRESS": "10.1.2.3"})["gateway"] == "tcp://10.1.2.3:1"
    assert readiness_checks({**env, "SCIM_LISTEN_ADDRESS": "::"})["gateway"] == "tcp://::1:1"
    # roles started by a scaler, not by the local run, hold nothing up
    assert set(readiness_checks({**env, "SCIM_WORKER_PROCESSES": "0", "SCIM_DELIVERER_PROCESSES": "0"})) == {
        "front", "reader", "sweeper", "gateway"}


def test_a_slow_start_names_what_holds_it_up_then_says_ready_once_everything_answers():
    handler = type("Probe", (_Probe,), {"ready": False})
    front = _serve(handler)
    gateway_port = _free_port()
    checks = {"front": f"http://127.0.0.1:{front.server_port}/readyz", "gateway": f"tcp://127.0.0.1:{gateway_port}"}
    out = io.StringIO()
    announcer = threading.Thread(target=announce_when_ready, args=(checks, "http://x/scim", out),
                                 kwargs={"patience": 0.3})
    announcer.start()
    try:
        deadline = time.monotonic() + 10
        while "not ready" not in out.getvalue():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        line = out.getvalue()
        assert "front: 503 no live worker on queue scim-writes" in line
        assert "gateway: not answering" in line
        assert "scimbus: ready after" not in line

        handler.ready = True
        time.sleep(0.5)
        assert "scimbus: ready after" not in out.getvalue()  # the gateway still refuses
        with socket.create_server(("127.0.0.1", gateway_port)):
            announcer.join(10)
        assert not announcer.is_alive()
        assert out.getvalue().count("not ready") == 1  # said once, not on every poll
        assert out.getvalue().splitlines()[-1].startswith("scimbus: ready after")
        assert out.getvalue().splitlines()[-1].endswith("serving http://x/scim")
    finally:
        front.shutdown()


def test_it_stops_quietly_when_the_stack_stops_first():
    stop = threading.Event()
    out = io.StringIO()
    announcer = threading.Thread(target=announce_when_ready,
                                 args=({"gateway": f"tcp://127.0.0.1:{_free_port()}"}, "u", out),
                                 kwargs={"stop": stop})
    announcer.start()
    stop.set()
    announcer.join(5)
    assert not announcer.is_alive() and out.getvalue() == ""


def test_the_checks_never_go_through_a_proxy_set_in_the_environment(monkeypatch):
    from services.runtime.local_run import _not_ready

    server = _serve(type("Probe", (_Probe,), {"ready": True}))
    try:
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # nothing listens there
        monkeypatch.setenv("no_proxy", "")
        assert _not_ready(f"http://127.0.0.1:{server.server_port}/readyz") is None
    finally:
        server.shutdown()
