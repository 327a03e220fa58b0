"""A job function for the graceful-shutdown tests (enqueued by dotted path, like the real one)."""

from __future__ import annotations

import time


def slow_echo(payload: dict) -> dict:
    time.sleep(float(payload["meta"]["seconds"]))
    return {"status": 201, "body": {"id": payload["resource_id"]}, "version": 1}
