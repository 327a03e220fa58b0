"""Purging the audit log never drops a change a connector has not handled (the outbox)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select

from libs.security.audit import purge
from libs.security.credentials import utcnow
from libs.store.tables import changes, delivery_cursors

pytestmark = pytest.mark.db


def _change(conn, seq: int, days_old: int) -> None:
    conn.execute(insert(changes).values(seq=seq, app="default", resource_type="User", resource_id=f"u{seq}",
                                        op="create", version=1, job_id=f"j{seq}", at=utcnow() - timedelta(days_old)))


def test_old_changes_go_only_once_every_connector_has_handled_them(engine):
    with engine.begin() as conn:
        for seq in (1, 2, 3):
            _change(conn, seq, days_old=400)
        _change(conn, 4, days_old=1)
        conn.execute(insert(delivery_cursors), [{"connector": "ldap", "seq": 2}, {"connector": "hr", "seq": 3}])
    purge(engine, retention_days=365)
    with engine.connect() as conn:
        left = sorted(conn.execute(select(changes.c.seq)).scalars())
    assert left == [3, 4]  # seq 3 is old but the ldap connector has not handled it yet


def test_without_connectors_old_changes_go(engine):
    with engine.begin() as conn:
        _change(conn, 1, days_old=400)
        _change(conn, 2, days_old=1)
    purge(engine, retention_days=365)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(changes)).scalar_one() == 1
