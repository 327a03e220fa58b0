"""How a service gets to the database: its store, opened here (issue 20, the store is the only door).

Each role opens the directory through one of these factories, sized for what it does;
the engine inside is built here and never handed to a module under ``services/``. The
libraries that still speak SQL (``libs.security``, ``libs.health``, the planner, the
replicas) take the store itself and find its engine with ``engine_of``.
"""

from __future__ import annotations

from sqlalchemy import Engine

from libs.config import Settings
from libs.store.directory import DirectoryStore
from libs.store.session import create_engine_from_url


def open_store(settings: Settings, *, url: str | None = None, pool_size: int = 5, read_only: bool = False,
               ping: bool = True, statement_timeout: float | None = None) -> DirectoryStore:
    """The directory at ``url`` (default: ``SCIM_DATABASE``). Its pool connects on first use,
    so opening a store in a parent process costs no connection before a fork."""
    return DirectoryStore(create_engine_from_url(url or settings.database, pool_size=pool_size, read_only=read_only,
                                                 ping=ping, statement_timeout=statement_timeout))


def open_reader_store(settings: Settings, url: str | None = None) -> DirectoryStore:
    """The reader's (or one replica's) store: autocommit reads, one connection per reader
    thread, every statement bounded by ``SCIM_QUERY_TIMEOUT``."""
    return open_store(settings, url=url, read_only=True, pool_size=settings.reader_threads,
                      statement_timeout=settings.query_timeout)


def engine_of(store: DirectoryStore | Engine) -> Engine:
    """The engine behind ``store``, for the libraries that run SQL of their own; an Engine
    is its own (tests and migrations hold engines)."""
    return store if isinstance(store, Engine) else store.engine


def database_problem(store: DirectoryStore | Engine) -> str | None:
    """Readiness: None when the store's database answers, else a short reason."""
    from libs.health import database_problem as problem

    return problem(engine_of(store))


def commit_position(store: DirectoryStore) -> int | None:
    """The primary's WAL position past every transaction committed so far (None on SQLite):
    what a replica must have replayed to show them (``libs.store.replicas``)."""
    from libs.store.replicas import wal_position

    return wal_position(engine_of(store))


def growth_analyzer(store: DirectoryStore):
    """The worker's planner statistics keeper of ``store`` (``libs.store.planner``)."""
    from libs.store.planner import GrowthAnalyzer

    return GrowthAnalyzer(engine_of(store))
