"""Alembic environment: the URL comes from the caller (libs.store.migrate), never a file."""

from alembic import context

from libs.store.session import create_engine_from_url
from libs.store.tables import metadata

config = context.config
engine = create_engine_from_url(config.get_main_option("sqlalchemy.url"))
try:
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # Batch migrations rebuild a SQLite table by copying it and dropping the old one;
            # with foreign keys on, that drop would cascade to every row referencing it. The
            # pragma only applies outside a transaction: set it on the driver's connection
            # before SQLAlchemy begins one (each revision checks the references it touched).
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        if connection.in_transaction():
            connection.commit()
        if sqlite:
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")
finally:
    engine.dispose()
