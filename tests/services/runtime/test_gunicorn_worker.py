"""The reader's gunicorn worker (``services.runtime.gunicorn_worker.EpollWorker``) under real gunicorn:
kept-alive connections, pipelining, more connections than threads, idle expiry, a graceful
stop, restarts after ``max_requests`` and the connection limit. The whole stack's tests run
the reader on it too; these pin the HTTP edges a SCIM request rarely reaches."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.runtime import gunicorn_worker
from tests.support.servers import free_port, wait_for_port
from tests.support.stack import descendants

pytestmark = [pytest.mark.servers, pytest.mark.skipif(not hasattr(select, "epoll"), reason="epoll is Linux-only")]

ROOT = Path(__file__).resolve().parents[3]


@contextlib.contextmanager
def gunicorn(*options: str, threads: int = 2, keepalive: int = 5, env: dict[str, str] | None = None,
             max_files: int | None = None) -> Iterator[tuple[int, subprocess.Popen]]:
    port = free_port()
    # util-linux's prlimit, not a preexec_fn: forking with a function to run is unsafe in a
    # process with threads (the child may block on a lock one of them held)
    limit = ["prlimit", f"--nofile={max_files}"] if max_files else []
    proc = subprocess.Popen(
        [*limit, sys.executable, "-m", "gunicorn", "-k", "services.runtime.gunicorn_worker.EpollWorker", "--threads", str(threads),
         "--keep-alive", str(keepalive), "--graceful-timeout", "10", "-b", f"127.0.0.1:{port}", *options,
         "tests.services.wsgi_probe:app"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, **(env or {})})
    try:
        wait_for_port(port, proc=proc)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)


class Client:
    """One raw HTTP/1.1 connection: what goes out and comes back is exactly what the test wrote."""

    def __init__(self, port: int | Path) -> None:
        if isinstance(port, Path):
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(10)
            self.sock.connect(str(port))
        else:
            self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def send(self, path: str, method: str = "GET", body: bytes = b"") -> None:
        self.sock.sendall(request(path, method, body))

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split()[1]), headers, body

    def get(self, path: str, method: str = "GET", body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        self.send(path, method, body)
        return self.response()

    def closed_by_server(self, timeout: float) -> bool:
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def close(self) -> None:
        self.sock.close()


def request(path: str, method: str = "GET", body: bytes = b"") -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


def test_a_kept_alive_connection_serves_request_after_request():
    with gunicorn() as (port, _):
        client = Client(port)
        answers = [client.get(f"/n{i}") for i in range(200)]
        assert [status for status, _, _ in answers] == [200] * 200
        assert [body.split()[0] for _, _, body in answers] == [f"/n{i}".encode() for i in range(200)]
        assert len({body.split()[1] for _, _, body in answers}) == 1


def test_pipelined_requests_are_each_answered_in_order():
    with gunicorn() as (port, _):
        client = Client(port)
        client.sock.sendall(request("/a") + request("/b", "POST", b"unread body") + request("/c"))
        assert [client.response()[2].split()[0] for _ in range(3)] == [b"/a", b"/b", b"/c"]


def test_a_body_the_app_leaves_unread_does_not_leak_into_the_next_request():
    with gunicorn() as (port, _):
        client = Client(port)
        assert client.get("/ignored", "POST", b"GET /smuggled HTTP/1.1\r\n\r\n" * 100)[0] == 200
        assert client.get("/echo", "POST", b"hello")[2] == b"hello"
        assert client.get("/after")[2].split()[0] == b"/after"


def test_an_answer_without_a_body_leaves_with_its_headers_and_the_connection_goes_on():
    with gunicorn() as (port, _):
        client = Client(port)
        client.send("/a", "HEAD")  # gunicorn writes no body for HEAD: the held headers leave alone
        while b"\r\n\r\n" not in client.buf:
            client._fill()
        head, _, client.buf = client.buf.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert client.get("/b")[2].split()[0] == b"/b"


class _Recorder:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(data)


def test_a_response_header_block_leaves_with_the_first_body_chunk_in_one_send():
    sock = _Recorder()
    out = gunicorn_worker._OneSend(sock)
    out.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    out.sendall(b"first")
    out.sendall(b"second")
    out.flush()
    assert sock.sent == [b"HTTP/1.1 200 OK\r\n\r\nfirst", b"second"]


def test_a_header_block_without_a_body_leaves_at_the_flush():
    sock = _Recorder()
    out = gunicorn_worker._OneSend(sock)
    out.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert sock.sent == []
    out.flush()
    out.flush()
    assert sock.sent == [b"HTTP/1.1 204 No Content\r\n\r\n"]


def test_many_more_connections_than_threads_are_all_served():
    with gunicorn(threads=2) as (port, _):
        clients = [Client(port) for _ in range(40)]
        for rnd in range(5):
            for i, client in enumerate(clients):
                client.send(f"/c{i}-{rnd}")
            for i, client in enumerate(reversed(clients)):
                assert client.response()[2].split()[0] == f"/c{len(clients) - 1 - i}-{rnd}".encode()


def open_files(processes: list[int]) -> int:
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in processes)  # 0 while the worker is being forked


def test_a_worker_out_of_file_descriptors_keeps_serving_and_takes_the_waiting_connections_later():
    """Past the process's descriptor limit ``accept`` fails (EMFILE) while clients wait in the
    listen backlog: the worker pauses that listener, serves what it has, and takes them as
    descriptors free up."""
    limit = 64
    with gunicorn(threads=2, max_files=limit) as (port, proc):
        clients = [Client(port) for _ in range(120)]  # the kernel completes each handshake
        for i, client in enumerate(clients):
            client.send(f"/c{i}")
        # Read too soon and the worker, taking one connection per turn of its loop, may close
        # each as fast as it takes the next and never reach the limit: wait until it has.
        deadline = time.monotonic() + 10
        while open_files(descendants(proc.pid)) < limit:
            assert time.monotonic() < deadline, "the worker never reached its descriptor limit"
            time.sleep(0.02)
        for i, client in enumerate(clients):  # each answer read and its connection closed in turn
            assert client.response()[2].split()[0] == f"/c{i}".encode()
            client.close()
        assert Client(port).get("/after")[0] == 200
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        assert b"accept failed" in proc.stderr.read()


def test_a_slow_request_holds_one_thread_and_the_others_keep_answering():
    with gunicorn(threads=2) as (port, _):
        slow = Client(port)
        slow.send("/sleep?s=4")
        time.sleep(0.3)
        started = time.monotonic()
        fast = Client(port)
        assert all(fast.get(f"/f{i}")[0] == 200 for i in range(50))
        assert time.monotonic() - started < 3.5, "fast requests waited for the slow one"
        assert slow.response()[0] == 200


def test_a_malformed_request_gets_400_and_the_worker_goes_on():
    with gunicorn() as (port, _):
        bad = Client(port)
        bad.sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert bad.response()[0] == 400
        assert Client(port).get("/fine")[0] == 200


def test_an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout():
    with gunicorn(keepalive=1) as (port, _):
        idle, busy = Client(port), Client(port)
        assert idle.get("/once")[0] == 200
        assert not idle.closed_by_server(0.3)
        for _ in range(20):  # a connection in use is not expired
            assert busy.get("/again")[0] == 200
            time.sleep(0.15)
        assert idle.closed_by_server(0.1)
        assert busy.get("/still")[0] == 200


def test_sigterm_answers_the_request_in_flight_then_stops():
    with gunicorn() as (port, proc):
        client, idle = Client(port), Client(port)
        assert idle.get("/kept")[0] == 200
        client.send("/sleep?s=2")
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert client.response()[0] == 200
        assert client.closed_by_server(10) and idle.closed_by_server(10), "a kept-alive connection was left open"
        assert proc.wait(15) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_a_worker_restarted_after_max_requests_leaves_no_request_unanswered():
    with gunicorn("--max-requests", "10") as (port, _):
        pids = set()
        for i in range(25):
            client = Client(port)
            for _ in range(3):
                try:
                    status, _, body = client.get(f"/r{i}")
                except ConnectionError:  # closed by a worker on its way out: a new connection
                    client = Client(port)
                    status, _, body = client.get(f"/r{i}")
                assert status == 200
                pids.add(body.split()[1])
        assert len(pids) > 3


def test_connections_past_worker_connections_wait_for_a_free_slot():
    with gunicorn("--worker-connections", "3", threads=2) as (port, _):
        held = [Client(port) for _ in range(3)]
        for client in held:
            assert client.get("/hold")[0] == 200
        late = Client(port)  # the kernel completes the handshake; the worker does not accept it yet
        late.send("/late")
        late.sock.settimeout(0.7)
        with pytest.raises(TimeoutError):
            late.sock.recv(1)
        held[0].close()
        late.sock.settimeout(10)
        assert late.response()[2].split()[0] == b"/late"


def test_concurrent_clients_get_their_own_answers():
    with gunicorn(threads=2) as (port, _):
        wrong: list[str] = []

        def run(n: int) -> None:
            client = Client(port)
            for i in range(100):
                body = client.get(f"/t{n}-{i}")[2]
                if body.split()[0] != f"/t{n}-{i}".encode():
                    wrong.append(body.decode())

        threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wrong == []


def test_each_worker_process_listens_on_its_own_socket_and_its_replacement_takes_it_over(tmp_path):
    prefix = tmp_path / "reader"
    with gunicorn("--workers", "2", env={"SCIM_WORKER_SOCKETS": str(prefix)}) as (port, _):
        own = [Path(f"{prefix}-{n}.sock") for n in range(2)]
        pids = [_answer_on(path) for path in own]
        assert len(set(pids)) == 2, "both sockets are served by one process"
        assert Client(port).get("/shared")[0] == 200  # the shared listener still answers

        os.kill(int(pids[0]), signal.SIGKILL)
        replacement = _answer_on(own[0], other_than=pids[0])
        assert replacement not in pids
        assert _answer_on(own[1]) == pids[1]


def _answer_on(path: Path, other_than: str | None = None, timeout: float = 20) -> str:
    """The pid that answers on a worker's own socket (waiting for a replacement to take it)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            pid = Client(path).get("/who")[2].split()[1].decode()
            if pid != other_than:
                return pid
        assert time.monotonic() < deadline, f"nothing new answers on {path}"
        time.sleep(0.1)
