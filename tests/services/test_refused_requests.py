"""Requests refused before the app reads them are still answered in SCIM's error format.

nginx and gunicorn each refuse what is not a valid HTTP request (a duplicate
Content-Length, an invalid request line, NUL in the path, TRACE, a URL or header block over
their limits) with a page of their own. Entra reads an HTML page as an unexpected answer;
the hostile sweep of 2026-12-05 found nine such shapes. Each gets the same status with a
SCIM error body, through the gateway and straight at the front alike.
"""

from __future__ import annotations

import json
import socket

import pytest

pytestmark = pytest.mark.stack


def _send(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """The answer to ``request`` sent as raw bytes: (status, headers lower-cased, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split(" ")[1]), headers, body


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _assert_scim_error(answer: tuple[int, dict[str, str], bytes], status: int) -> None:
    got, headers, body = answer
    assert got == status, (got, body[:300])
    assert headers["content-type"].startswith("application/scim+json"), (headers, body[:300])
    error = json.loads(body)
    assert error["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert error["status"] == str(status)


REFUSED_BY_THE_GATEWAY = {
    "a duplicate Content-Length": (b"POST /scim/Users HTTP/1.1\r\nHost: x\r\nContent-Type: application/scim+json\r\n"
                                   b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400),
    "two Authorization headers": (b"GET /scim/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a\r\n"
                                  b"Authorization: Bearer b\r\n\r\n", 400),
    "NUL in the path": (b"GET /scim/Users/%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "an invalid request line": (b"HELLO\r\n\r\n", 400),
    "TRACE": (b"TRACE /scim/Users HTTP/1.1\r\nHost: x\r\n\r\n", 405),
    "a 100 KB URL": (b"GET /scim/Users?filter=" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    "a 1 MB header field": (b"GET /scim/Users HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n", 431),
}


@pytest.mark.parametrize("shape", REFUSED_BY_THE_GATEWAY)
def test_a_request_the_gateway_refuses_is_answered_with_a_scim_error(stack, shape):
    request, status = REFUSED_BY_THE_GATEWAY[shape]
    _assert_scim_error(_send(stack.port, request), status)


REFUSED_BY_THE_FRONT = {
    "an invalid request line": (b"HELLO\r\n\r\n", 400),
    "a duplicate Content-Length": (b"POST /scim/Users HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                                   b"Content-Length: 3\r\n\r\n{}", 400),
    "a header field over 64 KB": (b"GET /scim/Users HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431),
}


@pytest.mark.parametrize("shape", REFUSED_BY_THE_FRONT)
def test_a_request_gunicorn_refuses_is_answered_with_a_scim_error(stack, shape):
    request, status = REFUSED_BY_THE_FRONT[shape]
    _assert_scim_error(_send(int(stack.env["SCIM_FRONT_PORT"]), request), status)


def test_a_long_bearer_token_the_gateway_passes_reaches_the_app_and_is_401(stack):
    # 10,000 characters: within the gateway's 64 KB header buffer; gunicorn's own 8,190-byte
    # field limit answered it 431 in HTML.
    request = b"GET /scim/Users HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * 10_000 + b"\r\n\r\n"
    _assert_scim_error(_send(stack.port, request), 401)
