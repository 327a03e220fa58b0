"""A tiny WSGI app for the gunicorn worker tests: says which process answered, sleeps on request."""

from __future__ import annotations

import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sleep":
        time.sleep(float(parse_qs(environ["QUERY_STRING"])["s"][0]))
    if path == "/echo":
        body = environ["wsgi.input"].read()
    else:
        body = f"{path} {os.getpid()}".encode()  # a body the client sent here is left unread
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
