"""The load generator's HTTP client: one keep-alive HTTP/1.1 connection per thread.

Why not httpx (which the tests use), nor ``http.client``: the bench runs on the same
2 cores as the servers it measures, so every microsecond the client spends is taken from
them. httpx spends ~0.6 ms of CPU per request; ``http.client`` ~0.18 ms, most of it parsing
each answer's headers with the ``email`` package. This client writes a request as one
prepared byte string and reads only what a load generator needs from the answer (status,
``Content-Length`` or chunked framing, ``Connection: close``), in about a third of that.
The peer and scimbus are driven by this same client.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import orjson

_MAX_HEAD = 65536


class HTTPError(Exception):
    """The request got no HTTP answer (connection refused, reset, timed out, malformed)."""


class Response:
    __slots__ = ("status_code", "content", "headers")

    def __init__(self, status_code: int, content: bytes, headers: dict[str, str]) -> None:
        # headers: names lower-cased; a repeated header keeps its last value.
        self.status_code, self.content, self.headers = status_code, content, headers

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.content)  # orjson.JSONDecodeError is a ValueError


class _Connection:
    """A socket and the bytes read from it past the last answer."""

    def __init__(self, host: str, port: int, secure: bool, timeout: float) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if secure:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        self.sock = sock
        self.buffer = b""

    def _recv(self, size: int = 65536) -> bytes:
        chunk = self.sock.recv(size)
        if not chunk:
            raise HTTPError("the server closed the connection")
        return chunk

    def _fill(self) -> None:
        self.buffer += self._recv()

    def _take(self, n: int) -> bytes:
        if len(self.buffer) < n:  # joined once: appending chunk by chunk copies a big body over and over
            chunks, have = [self.buffer], len(self.buffer)
            while have < n:
                chunks.append(chunk := self._recv(max(65536, n - have)))
                have += len(chunk)
            self.buffer = b"".join(chunks)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def _line(self) -> bytes:
        while (end := self.buffer.find(b"\r\n")) < 0:
            if len(self.buffer) > _MAX_HEAD:
                raise HTTPError("an answer line longer than 64 KiB")
            self._fill()
        line, self.buffer = self.buffer[:end], self.buffer[end + 2:]
        return line

    def exchange(self, request: bytes, method: str) -> tuple[Response, bool]:
        """(the answer, whether the connection stays open)."""
        self.sock.sendall(request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            if len(self.buffer) > _MAX_HEAD:
                raise HTTPError("an answer head longer than 64 KiB")
            self._fill()
        head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4:]
        status_line, *lines = head.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HTTPError(f"not an HTTP answer: {status_line[:80]!r}")
        status = int(parts[1])
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        keep = headers.get("connection", "").lower() != "close" and parts[0] != "HTTP/1.0"
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._chunked()
        elif "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        else:  # delimited by the end of the connection
            chunks = [self.buffer]
            self.buffer = b""
            while chunk := self.sock.recv(65536):
                chunks.append(chunk)
            body, keep = b"".join(chunks), False
        return Response(status, body, headers), keep

    def _chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self._line().split(b";", 1)[0], 16)
            if size == 0:
                while self._line():  # trailers, up to the empty line
                    pass
                return b"".join(chunks)
            chunks.append(self._take(size))
            self._take(2)

    def close(self) -> None:
        self.sock.close()


class Client:
    """``request(method, path, json=…, params=…)`` against ``base_url`` + path."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/") + "/"
        self._prefix = parts.path.rstrip("/")
        self._secure = parts.scheme == "https"
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or (443 if self._secure else 80)
        host = self._host if self._port == (443 if self._secure else 80) else f"{self._host}:{self._port}"
        self._head = "".join(f"{k}: {v}\r\n" for k, v in {"Host": host, **headers}.items())
        self._timeout = timeout
        self._conn: _Connection | None = None

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> Response:
        # Like httpx: a path given with spaces or quotes in its query is sent percent-encoded.
        target = quote(self._prefix + path, safe="/?&=%:@+,;$!*'()~") + (
            f"{'&' if '?' in path else '?'}{urlencode(params, quote_via=quote)}" if params else "")
        body = orjson.dumps(json) if json is not None else b""
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        length = f"Content-Length: {len(body)}\r\n" if body or method in ("POST", "PUT", "PATCH") else ""
        request = f"{method} {target} HTTP/1.1\r\n{self._head}{extra}{length}\r\n".encode("latin-1") + body
        # A keep-alive connection the server closed while idle fails at once, before any
        # answer: a GET is sent again on a new one; any other method reports the error.
        for attempt in (1, 2):
            reused = self._conn is not None
            try:
                if self._conn is None:
                    self._conn = _Connection(self._host, self._port, self._secure, self._timeout)
                answer, keep = self._conn.exchange(request, method)
            except (OSError, ValueError, HTTPError) as exc:
                self.close()
                if attempt == 2 or not reused or method != "GET":
                    raise exc if isinstance(exc, HTTPError) else HTTPError(f"{type(exc).__name__}: {exc}") from exc
                continue
            if not keep:
                self.close()
            return answer
        raise AssertionError("unreachable")

    def get(self, path: str, **kw) -> Response:
        return self.request("GET", path, **kw)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
