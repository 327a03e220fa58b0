"""Alembic environment: the URL comes from the caller (libs.store.migrate), never a file."""

from alembic import context

from libs.store.session import create_engine_from_url
from libs.store.tables import metadata

config = context.config
engine = create_engine_from_url(config.get_main_option("sqlalchemy.url"))
try:
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        if connection.in_transaction():
            connection.commit()
finally:
    engine.dispose()
