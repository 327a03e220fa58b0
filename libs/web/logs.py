"""Structured application logs: one JSON object per line, carrying the request id.

A line names the request (method, route pattern, status, app, credential name, client IP,
request id, milliseconds) but never its query string, body or Authorization header: those
hold filters on userNames, PII and secrets. Exceptions are logged with their traceback
here, never in a response.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from flask import Flask, Response, g, has_request_context, request

from libs.config import Settings
from libs.web.request import request_id

access = logging.getLogger("scimbus.access")

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        if has_request_context():
            line["request_id"] = request_id()
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure(settings: Settings) -> None:
    if settings.log_format != "json":
        logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    JsonFormatter.converter = time.gmtime  # type: ignore[assignment]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)


def init_app(app: Flask) -> None:
    @app.after_request
    def _log_request(response: Response) -> Response:
        if request.path.startswith(("/metrics", "/healthz")) or not access.isEnabledFor(logging.INFO):
            return response
        principal = g.get("scim_principal")
        started = g.get("scim_started")
        access.info("request", extra={
            "method": request.method,
            "route": request.url_rule.rule if request.url_rule is not None else "unmatched",
            "status": response.status_code, "app": principal.app if principal else None,
            "credential": principal.name if principal else None, "client_ip": request.remote_addr,
            "ms": round((time.perf_counter() - started) * 1000, 1) if started else None,
        })
        return response
