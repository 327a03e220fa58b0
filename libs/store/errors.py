"""What a caller outside libs/store catches when the database cannot be used (down, not
migrated, refusing) or refused one write: the store's errors are SQLAlchemy's, named here
so that services/ need not import SQLAlchemy to catch them."""

from sqlalchemy.exc import SQLAlchemyError as DatabaseError


class LostRace(DatabaseError):
    """A write broke a uniqueness constraint: a concurrent writer committed the same name
    between this write's check and its insert. Its savepoint is rolled back; the write may
    run again, and its check then answers the conflict."""


class TransactionLost(DatabaseError):
    """The database failed under a write (connection lost, deadlock, serialization): the
    whole transaction is gone, and its batch must be retried from the start."""


class Replay(Exception):
    """A write failed in a transaction that takes no savepoints (``unit_of_work(...,
    savepoints=False)``): the transaction is rolled back whole, and its batch is to be
    applied again with a savepoint for each write, where the failure is that write's alone."""


__all__ = ["DatabaseError", "LostRace", "Replay", "TransactionLost"]
