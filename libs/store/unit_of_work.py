"""The worker's write transaction as one object: the directory writes of a batch, each in
a savepoint of its own, and the batch's idempotency and audit records.

The connection stays inside libs/store (issue 20: the store is the only door); the worker
calls domain methods on a ``UnitOfWork`` and catches ``libs.store.errors`` classes. Each
method is the ``DirectoryStore`` method of the same name on this transaction's
connection: no statement is added (the write path counts them), and without savepoints
on PostgreSQL the updates of resources are held back and written together in one
(``libs.store.diff.Updates``) before the next other statement.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Connection, RootTransaction
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError

from libs.scim.schemas import GROUPS, USERS, ResourceSchema
from libs.store.diff import Updates
from libs.store.directory import DirectoryStore, StoredResource
from libs.store.errors import LostRace, Replay, TransactionLost


class UnitOfWork:
    """One write transaction of ``store`` (``unit_of_work``)."""

    def __init__(self, store: DirectoryStore, conn: Connection, transaction: RootTransaction | None = None,
                 *, savepoints: bool = True) -> None:
        self.store = store
        self._conn = conn
        self._savepoints = savepoints
        # Given, the transaction may be rolled back and begun again while it holds no write.
        self._transaction = transaction
        self._holds_writes = transaction is None
        # Rows locked ahead by ``lock_ahead``, each handed out by ``load`` and kept as this
        # transaction's own writes leave them (``_ahead_keys``: their keys by pk).
        self._locked: dict[tuple[str, str, str], StoredResource] = {}
        self._ahead_keys: dict[int, tuple[str, str, str]] = {}
        # Without savepoints (every write's failure replays the batch), PostgreSQL's updates
        # are held back and written together before the next other statement (``_now``).
        self._updates = Updates() if not savepoints and conn.dialect.name == "postgresql" else None

    @contextlib.contextmanager
    def attempt(self) -> Iterator[None]:
        """One write in a savepoint: kept when the block ends, rolled back when it raises.

        A uniqueness violation (a concurrent writer took the name between the check and
        the insert) is rolled back and raised as ``LostRace``; a value the database refuses
        (``DataError``) is rolled back and raised as it is, as anything else is; any other
        database error leaves the transaction unusable and is raised as ``TransactionLost``
        (the batch is retried whole).

        The first write of a transaction that holds nothing yet (only reads, such as the
        idempotency check) takes no savepoint: rolling the whole transaction back and
        beginning it again undoes the same, and a savepoint and its release are two round
        trips to PostgreSQL, half of what a PATCH alone in its batch cost (issue 19).
        """
        if not self._savepoints:
            with self._or_replay():
                yield
        elif self._holds_writes:
            with self._savepoint():
                yield
        else:
            with self._first_write():
                yield
        self._holds_writes = True

    @contextlib.contextmanager
    def _savepoint(self) -> Iterator[None]:
        savepoint = self._conn.begin_nested()

        def undo() -> None:
            savepoint.rollback()
            self._forget_read_ahead()  # some may be as the write left them; their locks stay

        with self._undone_by(undo):
            yield
        savepoint.commit()

    @contextlib.contextmanager
    def _or_replay(self) -> Iterator[None]:
        try:
            yield
        except (IntegrityError, DataError) as exc:
            raise Replay(str(exc.orig)) from exc
        except DBAPIError as exc:
            raise TransactionLost(str(exc.orig)) from exc
        except Exception as exc:
            raise Replay(str(exc)) from exc

    @contextlib.contextmanager
    def _first_write(self) -> Iterator[None]:
        with self._undone_by(self._begin_again):
            yield

    @staticmethod
    @contextlib.contextmanager
    def _undone_by(undo) -> Iterator[None]:
        """A write that fails is undone by ``undo`` (its savepoint's rollback, or the whole
        transaction's when it is the first), its lost uniqueness race raised as ``LostRace``;
        a database failure leaves the transaction to RQ's retry (``TransactionLost``).

        A value the database refuses (``DataError``: SQLSTATE class 22, or the driver's own
        refusal of a NUL in text) is the write's own fault and fails the same way every time:
        undone and raised as it is, it fails that write alone (500) instead of the whole batch
        retried until RQ gives up (~10 s, then 503 for every write of it)."""
        try:
            yield
        except IntegrityError as exc:
            undo()
            raise LostRace(str(exc.orig)) from exc
        except DataError:
            undo()
            raise
        except DBAPIError as exc:
            raise TransactionLost(str(exc.orig)) from exc
        except Exception:
            undo()
            raise

    def _begin_again(self) -> None:
        """Roll back everything this transaction did (one write, no other) and begin anew."""
        assert self._transaction is not None
        self._forget_read_ahead()  # their locks go with the transaction
        self._transaction.rollback()
        self._transaction = self._conn.begin()

    # ------------------------------------------------------------------ updates held back
    @property
    def _now(self) -> Connection:
        """The connection, once the updates held back are written: every statement that may
        read what they change goes after them."""
        if self._updates is not None and self._updates.pks:
            self._updates.flush(self._conn)
        return self._conn

    def write_held(self) -> None:
        """Write the updates held back now; a failure replays the batch, as any write's does
        without savepoints."""
        if self._updates is not None and self._updates.pks:
            with self._or_replay():
                self._updates.flush(self._conn)

    # ------------------------------------------------------------------ idempotency, audit
    def applied_results(self, job_ids: list[str]) -> dict[str, dict[str, Any]]:
        return self.store.applied_results(self._now, job_ids)

    def record(self, entries: list[dict[str, Any]], rejections: list[dict[str, Any]] = ()) -> None:
        self.write_held()
        self.store.record(self._conn, entries, rejections)

    # ------------------------------------------------------------------ resources
    def load(self, app: str, schema: ResourceSchema, id: str, *, lock: bool,
             deleting: bool = False) -> StoredResource | None:
        if lock and (ahead := self._locked.pop((app, schema.name, id), None)) is not None:
            return ahead
        return self.store.load(self._now, app, schema, id, lock=lock, deleting=deleting)

    def lock_ahead(self, app: str, schema: ResourceSchema, ids: list[str], *, deleting: bool = False) -> None:
        """Lock and read the rows of several writes to come in one statement (``load_many``;
        ``deleting``: any of them may be deleted); ``load`` then hands each out once instead
        of reading it, and again as this transaction's writes of it leave it. The caller
        calls ``forget_users`` after any write that could change whether a user read ahead
        belongs to a group."""
        found = self.store.load_many(self._now, app, schema, ids, lock=True, deleting=deleting)
        for id, row in found.items():
            self._locked[(app, schema.name, id)] = row
            self._ahead_keys[row.pk] = (app, schema.name, id)

    def _forget_read_ahead(self) -> None:
        self._locked.clear()
        self._ahead_keys.clear()

    def forget_users(self) -> None:
        """Users read ahead are read again when loaded (they stay locked): whether a user
        belongs to a group (``StoredResource.in_groups``, which spares its answer a query)
        is all a write of another resource can change of a row read ahead, and only a
        user's answer reads it. Groups read ahead stay: a batch of member adds to a few
        groups reads each group once."""
        self._locked = {key: row for key, row in self._locked.items() if key[1] != USERS.name}

    def check_unique(self, app: str, schema: ResourceSchema, doc: dict[str, Any], **kwargs: Any) -> None:
        self.store.check_unique(self._now, app, schema, doc, **kwargs)

    def taken(self, app: str, schema: ResourceSchema, docs: list[dict[str, Any]]) -> set[str]:
        return self.store.taken(self._now, app, schema, docs)

    def insert_resource(self, app: str, schema: ResourceSchema, id: str, doc: dict[str, Any],
                        **kwargs: Any) -> StoredResource:
        return self.store.insert_resource(self._now, app, schema, id, doc, **kwargs)

    def insert_resources(self, app: str, schema: ResourceSchema, items: list[tuple[str, dict[str, Any]]],
                         **kwargs: Any) -> list[StoredResource]:
        return self.store.insert_resources(self._now, app, schema, items, **kwargs)

    def update_resource(self, schema: ResourceSchema, current: StoredResource, doc: dict[str, Any],
                        **kwargs: Any) -> StoredResource:
        if self._updates is not None and self._updates.must_flush(current.pk, kwargs.get("doc_changed", True)):
            self.write_held()  # its second update in the batch: the first goes first
        stored = self.store.update_resource(self._conn, schema, current, doc, held=self._updates, **kwargs)
        if (key := self._ahead_keys.get(stored.pk)) is not None:
            self._locked[key] = stored  # as this write left it: the next write of it needs no read
        return stored

    def delete_resource(self, current: StoredResource) -> None:
        self.store.delete_resource(self._now, current)
        self._locked.pop(self._ahead_keys.pop(current.pk, ("", "", "")), None)
        # The groups it belonged to have a new version: read them again when loaded.
        self._locked = {key: row for key, row in self._locked.items() if key[1] != GROUPS.name}

    # ------------------------------------------------------------------ members
    # Memberships go by ids and pks, which no update changes: they need not wait for the
    # updates held back (a batch of member adds writes its groups' versions once).
    def add_members(self, app: str, group: StoredResource, ids: list[str], **kwargs: Any) -> int:
        return self.store.add_members(self._conn, app, group, ids, **kwargs)

    def remove_members(self, app: str, group: StoredResource, ids: Iterable[str] | None) -> int:
        return self.store.remove_members(self._conn, app, group, ids)

    def members_of(self, group_pks: list[int]) -> dict[int, list[dict[str, Any]]]:
        return self.store.members_of(self._now, group_pks)

    def groups_of(self, member_pks: list[int]) -> dict[int, list[dict[str, Any]]]:
        return self.store.groups_of(self._now, member_pks)


@contextlib.contextmanager
def unit_of_work(store: DirectoryStore, *, savepoints: bool = True) -> Iterator[UnitOfWork]:
    """A write transaction of ``store``: committed when the block ends, rolled back when it raises.

    ``savepoints=False``: no write takes a savepoint, and any write's failure raises
    ``Replay`` (its batch is to run again with them): two round trips fewer per write when
    every write of the batch succeeds, as nearly all do.
    """
    with store.write_connection() as conn:
        unit = UnitOfWork(store, conn, conn.begin(), savepoints=savepoints)
        try:
            yield unit
            unit.write_held()
        except BaseException:
            if unit._transaction.is_active:
                unit._transaction.rollback()
            raise
        unit._transaction.commit()
