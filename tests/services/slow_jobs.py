"""A job function for the graceful-shutdown tests (enqueued by dotted path, like the real one)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def slow_echo(payload: dict) -> dict:
    writes = payload["writes"]
    time.sleep(float(writes[0]["meta"]["seconds"]))
    return {"results": [{"status": 201, "body": {"id": w["resource_id"]}, "version": 1} for w in writes]}


def stall_once(payload: dict) -> dict:
    """Hangs on its first run (its worker is to be killed meanwhile) and answers at once when
    run again; the marker file holds the pid of the worker running the first run."""
    writes = payload["writes"]
    marker = Path(writes[0]["meta"]["marker"])
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        time.sleep(120)
    return {"results": [{"status": 201, "body": {"id": w["resource_id"]}, "version": 1} for w in writes]}
