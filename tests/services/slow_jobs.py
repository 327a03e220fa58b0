"""A job function for the graceful-shutdown tests (enqueued by dotted path, like the real one)."""

from __future__ import annotations

import time


def slow_echo(payload: dict) -> dict:
    writes = payload["writes"]
    time.sleep(float(writes[0]["meta"]["seconds"]))
    return {"results": [{"status": 201, "body": {"id": w["resource_id"]}, "version": 1} for w in writes]}
