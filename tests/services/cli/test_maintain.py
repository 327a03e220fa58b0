"""``scimbus maintain`` runs the sweeper's retention at once, as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from libs.store.directory import DirectoryStore
from libs.store.retention import utcnow
from libs.store.tables import applied_writes, changes
from tests.support.stack import ROOT

pytestmark = pytest.mark.db


def _write(store: DirectoryStore, job_id: str, age: timedelta) -> None:
    with store.transaction() as conn:
        store.record(conn, [{"app": "default", "job_id": job_id, "request_id": None, "result": {"status": 201},
                             "change": {"resource_type": "User", "resource_id": job_id, "op": "create",
                                        "version": 1}}])
        conn.execute(update(applied_writes).where(applied_writes.c.job_id == job_id)
                     .values(applied_at=utcnow() - age))
        conn.execute(update(changes).where(changes.c.job_id == job_id).values(at=utcnow() - age))


def test_maintain_purges_past_the_windows_and_says_what_went(engine, database_url, tmp_path):
    store = DirectoryStore(engine)
    _write(store, "old", timedelta(days=3))
    _write(store, "older-than-a-job", timedelta(hours=2))
    _write(store, "young", timedelta(seconds=5))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCIM_")}
    env.update(SCIM_VAR_DIR=str(tmp_path), SCIM_DATABASE_URL=database_url, SCIM_CHANGE_RETENTION="1d",
               SCIM_AUDIT_RETENTION_DAYS="0")
    run = subprocess.run([sys.executable, "-m", "services.cli", "maintain"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "applied_writes: 2 purged, changes: 1 purged" in run.stdout
    with engine.connect() as conn:
        assert sorted(conn.execute(select(applied_writes.c.job_id)).scalars()) == ["young"]
        assert sorted(conn.execute(select(changes.c.job_id)).scalars()) == ["older-than-a-job", "young"]
