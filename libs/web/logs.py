"""Structured application logs: one JSON object per line, carrying the request id.

A line names the request (method, route pattern, status, app, credential name, client IP,
request id, milliseconds) but never its query string, body or Authorization header: those
hold filters on userNames, PII and secrets. Exceptions are logged with their traceback
here, never in a response.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

import orjson

from libs.config import Settings

if TYPE_CHECKING:
    from flask import Flask

# Flask is imported only where a request is served: the worker pools log through this
# module too, and importing Flask would cost each of their processes memory for nothing.

access = logging.getLogger("scimbus.access")

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
        }
        flask = sys.modules.get("flask")
        if flask is not None and flask.has_request_context():
            from libs.web.request import request_id

            line["request_id"] = request_id()
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class Housekeeping(logging.Filter):
    """RQ's INFO lines become DEBUG: a worker started, its registries cleaned (every 5 s, for
    every queue, idle or not), each job taken and finished. None asks anything of an
    operator; what does (a job that failed, a worker that died) RQ logs as WARNING or ERROR,
    and those pass untouched. A handler's filter, so it sees the records of every ``rq.*``
    logger, however RQ sets their levels."""

    def __init__(self, level: str) -> None:
        super().__init__()
        self.debug = logging.getLevelName(level) <= logging.DEBUG

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and (record.name == "rq" or record.name.startswith("rq.")):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return self.debug
        return True


def rq_level(level: str) -> str:
    """The level of RQ's worker loggers: its INFO lines are housekeeping (``Housekeeping``),
    written at DEBUG only; at any other level they are not even made (two for every job)."""
    if logging.getLevelName(level) <= logging.DEBUG:
        return level
    return logging.getLevelName(max(logging.getLevelName(level), logging.WARNING))


def configure(settings: Settings) -> None:
    """One handler on the root logger, for every role (RQ then adds none of its own)."""
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
        JsonFormatter.converter = time.gmtime  # type: ignore[assignment]
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(Housekeeping(settings.log_level))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)


_PROBES = ("/metrics", "/healthz", "/readyz")
"""Paths polled by probes and scrapers every few seconds: logged only when they fail."""


def init_app(app: Flask) -> None:
    from flask import Response, g, request

    @app.after_request
    def _log_request(response: Response) -> Response:
        # The gateway's access log has every request, with the request id the app's lines
        # carry; here, at INFO, only the answers an operator looks for (400 or more). A JSON
        # line per request cost the reader a fifth of its GETs/s (docs/capacity.md).
        failed = response.status_code >= 400
        level = logging.INFO if failed else logging.DEBUG
        if (request.path.startswith(_PROBES) and not failed) or not access.isEnabledFor(level):
            return response
        principal = g.get("scim_principal")
        started = g.get("scim_started")
        access.log(level, "request", extra={
            "method": request.method,
            "route": request.url_rule.rule if request.url_rule is not None else "unmatched",
            "status": response.status_code, "app": principal.app if principal else None,
            "credential": principal.name if principal else None, "client_ip": request.remote_addr,
            "ms": round((time.perf_counter() - started) * 1000, 1) if started else None,
        })
        return response
