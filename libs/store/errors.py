"""What a caller outside libs/store catches when the database cannot be used (down, not
migrated, refusing): the store's errors are SQLAlchemy's, named here so that services/
need not import SQLAlchemy to catch them."""

from sqlalchemy.exc import SQLAlchemyError as DatabaseError

__all__ = ["DatabaseError"]
