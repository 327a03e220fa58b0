"""The load generator's HTTP client: one keep-alive HTTP/1.1 connection per thread.

Why not httpx (which the tests use): the bench runs on the same 2 cores as the server it
measures, and httpx spends ~0.6 ms of CPU per request, a fifth of the machine at the rates
measured here. ``http.client`` with orjson does the same requests for about a quarter of
that, so the servers get the cores. The peer and scimbus are driven by this same client.
"""

from __future__ import annotations

import http.client
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import orjson


class HTTPError(Exception):
    """The request got no HTTP answer (connection refused, reset, timed out)."""


class Response:
    __slots__ = ("status_code", "content", "headers")

    def __init__(self, status_code: int, content: bytes, headers: http.client.HTTPMessage) -> None:
        self.status_code, self.content, self.headers = status_code, content, headers

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return orjson.loads(self.content)  # orjson.JSONDecodeError is a ValueError


class Client:
    """``request(method, path, json=…, params=…)`` against ``base_url`` + path."""

    def __init__(self, base_url: str, headers: dict[str, str], timeout: float) -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/") + "/"
        self._prefix = parts.path.rstrip("/")
        self._secure = parts.scheme == "https"
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port
        self._headers = dict(headers)
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            kind = http.client.HTTPSConnection if self._secure else http.client.HTTPConnection
            self._conn = kind(self._host, self._port, timeout=self._timeout)
        return self._conn

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, str] | None = None,
                headers: dict[str, str] | None = None) -> Response:
        # Like httpx: a path given with spaces or quotes in its query is sent percent-encoded.
        target = quote(self._prefix + path, safe="/?&=%:@+,;$!*'()~") + (
            f"{'&' if '?' in path else '?'}{urlencode(params, quote_via=quote)}" if params else "")
        body = orjson.dumps(json) if json is not None else None
        sent = {**self._headers, **(headers or {})}
        # A keep-alive connection the server closed while idle fails at once, before any
        # answer: a GET is sent again on a new one; any other method reports the error.
        for attempt in (1, 2):
            reused = self._conn is not None and self._conn.sock is not None
            conn = self._connection()
            try:
                conn.request(method, target, body=body, headers=sent)
                answer = conn.getresponse()
                return Response(answer.status, answer.read(), answer.headers)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                if attempt == 2 or not reused or method != "GET":
                    raise HTTPError(f"{type(exc).__name__}: {exc}") from exc
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
