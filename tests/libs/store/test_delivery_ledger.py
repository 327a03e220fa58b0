"""The delivery ledger as the deliverer sees it (libs/store/delivery_ledger.py): a change
to deliver, what a connector did with it, dead letters and the lag figures."""

from __future__ import annotations

import uuid
from datetime import timedelta

from libs.scim.schemas import USERS
from libs.store.deliveries import ResourceKey, utcnow
from libs.store.delivery_ledger import DeliveryLedger
from libs.store.directory import DirectoryStore


def _create(store: DirectoryStore, id: str) -> None:
    doc = {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": f"{id}@contoso.com"}
    with store.transaction() as conn:
        stored = store.insert_resource(conn, "default", USERS, id, doc)
        store.record(conn, [{"app": "default", "job_id": uuid.uuid4().hex, "result": {}, "request_id": None,
                             "change": {"resource_type": "User", "resource_id": id, "op": "create",
                                        "version": stored.version}}])


def test_a_change_is_owed_until_its_state_is_saved_and_the_saved_state_reads_back(engine):
    store = DirectoryStore(engine)
    ledger, key = DeliveryLedger(store), ResourceKey("default", "User", "u1")
    _create(store, "u1")

    newest, state = ledger.newest_change_and_state("appdb", key)
    assert newest is not None and newest == ledger.newest_change(key)
    assert not state.exists and not state.handled(newest[0])

    state.delivered_seq, state.delivered_version, state.present, state.remote_id = *newest, True, "remote-1"
    ledger.save("appdb", key, state)
    again = ledger.state("appdb", key)
    assert again.exists and again.handled(newest[0]) and again.remote_id == "remote-1"
    assert set(ledger.states("appdb", "default", "User")) == {"u1"}
    assert ledger.states("other", "default", "User") == {}


def test_the_lag_counts_from_the_oldest_pending_change_and_dead_letters_are_counted(engine):
    store = DirectoryStore(engine)
    ledger, key = DeliveryLedger(store), ResourceKey("default", "User", "u2")
    connectors = {"appdb": ("default", ("User",))}
    assert ledger.lag_and_dead(connectors, utcnow()) == {"appdb": (0.0, 0)}

    _create(store, "u2")
    seq, version = ledger.newest_change(key)
    ledger.add_dead_letter("appdb", key, seq, version, "Refused: no", 3)
    lag, dead = ledger.lag_and_dead(connectors, utcnow() + timedelta(minutes=1))["appdb"]
    assert 59 <= lag <= 600 and dead == 1
