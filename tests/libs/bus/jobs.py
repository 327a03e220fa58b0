"""Job functions for the bus tests (enqueued by dotted path, like the real one)."""

from __future__ import annotations

from pathlib import Path


def echo(payload: dict) -> dict:
    return {"results": [{"status": 201, "body": {"id": w["resource_id"]}, "version": 1} for w in payload["writes"]]}


def flaky(payload: dict) -> dict:
    """Fails on its first run (as if the database blinked), succeeds on the retry."""
    marker = Path(payload["writes"][0]["meta"]["marker"])
    if not marker.exists():
        marker.write_text("failed once")
        raise ConnectionError("database went away")
    return echo(payload)


def broken(payload: dict) -> dict:
    raise RuntimeError("a bug")
