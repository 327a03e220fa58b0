"""The bench's own HTTP client reads every framing a server may answer with, keeps its
connection across requests, and sends a GET again when an idle connection was closed."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.client import Client, HTTPError

pytestmark = pytest.mark.servers  # starts servers of its own (tests/conftest.py)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: set = set()

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        _Handler.connections.add(self.client_address)
        if self.path.endswith("/chunked"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b'{"a": ', b'"chunked"}'):
                self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\nX-Trailer: 1\r\n\r\n")
        elif self.path.endswith("/until-close"):
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b'{"a": "until close"}')
            self.close_connection = True
        elif self.path.endswith("/close-idle"):
            self._answer(204, b"")
            self.close_connection = True  # the next request on it finds it closed
        else:
            self._answer(200, b'{"path": "%s"}' % self.path.encode())

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(201, body, Location="/scim/Users/1")

    def _answer(self, status: int, body: bytes, **headers: str) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if status != 204:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    _Handler.connections = set()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/scim"
    httpd.shutdown()
    httpd.server_close()


def test_answers_sized_chunked_or_ended_by_close_are_read_whole(server):
    with Client(server, {"Authorization": "Bearer t"}, 5) as client:
        assert client.get("/Users", params={"filter": 'userName eq "a b"'}).json() == {
            "path": "/scim/Users?filter=userName%20eq%20%22a%20b%22"}
        assert client.get("/chunked").json() == {"a": "chunked"}
        assert client.get("/until-close").json() == {"a": "until close"}
        created = client.request("POST", "/Users", json={"userName": "é"})
        assert (created.status_code, created.json(), created.headers["location"]) == (201, {"userName": "é"},
                                                                                      "/scim/Users/1")


def test_one_connection_serves_many_requests(server):
    with Client(server, {}, 5) as client:
        for _ in range(5):
            assert client.get("/Users").status_code == 200
    assert len(_Handler.connections) == 1


def test_a_get_on_a_connection_the_server_closed_is_sent_again_and_a_post_is_not(server):
    with Client(server, {}, 5) as client:
        assert client.get("/close-idle").status_code == 204
        assert client.get("/Users").status_code == 200  # the client saw no close: it finds out on reuse
        assert len(_Handler.connections) == 2
        assert client.get("/close-idle").status_code == 204
        with pytest.raises(HTTPError):  # a write may have been applied: not the client's to repeat
            client.request("POST", "/Users", json={})
        assert client.request("POST", "/Users", json={}).status_code == 201  # on a new connection


def test_no_server_is_an_http_error():
    with Client("http://127.0.0.1:9/scim", {}, 1) as client, pytest.raises(HTTPError):
        client.get("/Users")


def test_a_body_of_megabytes_arrives_whole(server):
    with Client(server, {}, 10) as client:
        body = {"members": [{"value": f"user-{i:07d}"} for i in range(100_000)]}
        answer = client.request("POST", "/Groups", json=body)
        assert answer.status_code == 201 and answer.json() == body
