"""The worker's write transaction (libs/store/unit_of_work.py): each write in a savepoint of
its own, a lost uniqueness race rolled back alone and named ``LostRace`` (no SQLAlchemy
error leaves libs/store), the other writes of the batch committed together."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from libs.scim.errors import NotFound
from libs.scim.schemas import USERS
from libs.store.directory import DirectoryStore
from libs.store.errors import LostRace
from libs.store.session import create_engine_from_url
from libs.store.unit_of_work import unit_of_work

pytestmark = pytest.mark.db


def _user(name: str) -> dict:
    return {"schemas": [USERS.core.urn], "userName": name}


def test_a_write_that_breaks_uniqueness_is_rolled_back_alone_as_a_lost_race(database_url):
    store = DirectoryStore(create_engine_from_url(database_url))
    try:
        with unit_of_work(store) as unit:
            with unit.attempt():
                unit.insert_resource("default", USERS, "uow-1", _user("uow-1@contoso.com"))
            with pytest.raises(LostRace), unit.attempt():  # the same id again: the primary key
                unit.insert_resource("default", USERS, "uow-1", _user("uow-1b@contoso.com"))
            with pytest.raises(NotFound), unit.attempt():  # a SCIM error: rolled back, raised as it is
                unit.insert_resource("default", USERS, "uow-2", _user("uow-2@contoso.com"))
                raise NotFound("refused after its insert")
            with unit.attempt():
                unit.insert_resource("default", USERS, "uow-3", _user("uow-3@contoso.com"))
        assert store.get("default", USERS, "uow-1")["userName"] == "uow-1@contoso.com"
        assert store.get("default", USERS, "uow-2") is None
        assert store.get("default", USERS, "uow-3") is not None
    finally:
        store.close()


def test_the_first_write_takes_no_savepoint_and_its_failure_leaves_the_transaction_usable(database_url):
    store = DirectoryStore(create_engine_from_url(database_url))
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context_, executemany):
        seen.append(statement)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        with unit_of_work(store) as unit:
            with pytest.raises(NotFound), unit.attempt():  # its insert goes with the transaction
                unit.insert_resource("default", USERS, "first-1", _user("first-1@contoso.com"))
                raise NotFound("refused after its insert")
            with unit.attempt():  # still the first write the transaction keeps
                unit.insert_resource("default", USERS, "first-2", _user("first-2@contoso.com"))
            with pytest.raises(LostRace), unit.attempt():  # now a savepoint: first-2 stays
                unit.insert_resource("default", USERS, "first-2", _user("first-2b@contoso.com"))
        # one savepoint in all, the last write's, rolled back
        assert [s.split()[0].upper() for s in seen if "SAVEPOINT" in s.upper()] == ["SAVEPOINT", "ROLLBACK"]
        assert store.get("default", USERS, "first-1") is None
        assert store.get("default", USERS, "first-2")["userName"] == "first-2@contoso.com"
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
        store.close()


def test_a_first_write_that_breaks_uniqueness_is_rolled_back_and_the_next_one_kept(database_url):
    store = DirectoryStore(create_engine_from_url(database_url))
    try:
        with unit_of_work(store) as unit:
            unit.insert_resource("default", USERS, "race-0", _user("race-0@contoso.com"))
        with unit_of_work(store) as unit:
            with pytest.raises(LostRace), unit.attempt():
                unit.insert_resource("default", USERS, "race-0", _user("race-0b@contoso.com"))
            with unit.attempt():
                unit.insert_resource("default", USERS, "race-1", _user("race-1@contoso.com"))
        assert store.get("default", USERS, "race-0")["userName"] == "race-0@contoso.com"
        assert store.get("default", USERS, "race-1") is not None
    finally:
        store.close()
