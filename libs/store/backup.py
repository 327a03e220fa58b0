"""Back up and restore the store (``scimbus backup PATH``, ``scimbus restore PATH``).

SQLite: SQLite's online backup API (``sqlite3.Connection.backup``) copies the database in
one step under a read transaction: in WAL mode writers go on meanwhile, and the copy is the
database as of one commit. PostgreSQL: ``pg_dump --format=custom`` (one repeatable-read
snapshot, writers go on) and ``pg_restore``; the commands are the documented ones of
docs/deployment.md, run here so that one command works for either backend.

A restore refuses a target that holds tables unless told to replace them (``force``), and
brings the restored schema to head afterwards: a backup taken by an older release restores
and upgrades (with the key encryption key of the settings, which migration 0005 needs). A
backup from a newer release than this one is refused before anything is touched.

Own code rather than a tool's: the two backends' own tools do the copying; this module only
picks the one the URL names, guards the target and migrates after.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import URL, make_url

from libs.store import migrate
from libs.store.session import create_engine_from_url

if TYPE_CHECKING:
    from libs.config import Settings

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"
PG_TIMEOUT = 3600.0
"""Seconds a pg_dump or pg_restore may run (a directory of millions of rows takes minutes)."""


class BackupError(Exception):
    """A backup or restore that cannot be done; its text says why, in one line."""


@dataclass(frozen=True)
class Restored:
    backend: str
    from_revision: str | None
    to_revision: str | None


def backup(url: str, path: str | Path, *, force: bool = False) -> str:
    """Copy the store at ``url`` to the file ``path``; returns the backend's name.

    The copy goes to a temporary file beside ``path`` and is renamed over it once complete:
    a failed backup never leaves a half file under the name a restore would use. An existing
    ``path`` is kept unless ``force``."""
    path = Path(path)
    if path.exists() and not force:
        raise BackupError(f"{path} exists; choose another name or pass --force to replace it")
    parsed = make_url(url)
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        if parsed.get_backend_name() == "sqlite":
            _sqlite_backup(_sqlite_file(parsed), partial)
        elif parsed.get_backend_name() == "postgresql":
            _run(["pg_dump", "--format=custom", "--no-owner", "--no-privileges", f"--file={partial}",
                  f"--dbname={_libpq_url(parsed)}"], parsed)
        else:
            raise BackupError(f"cannot back up a {parsed.get_backend_name()} database")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return parsed.get_backend_name()


def restore(path: str | Path, url: str, *, force: bool = False, settings: Settings | None = None) -> Restored:
    """Load the backup ``path`` into the store at ``url``, then migrate it to head.

    ``url`` must hold no table, unless ``force``: then everything in it is replaced. Stop the
    writers (front, workers, deliverers, sweeper) first; on SQLite stop every process that
    has the file open."""
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"{path}: no such backup file")
    with open(path, "rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    kind = "sqlite" if head == SQLITE_MAGIC else "postgresql" if head.startswith(PG_DUMP_MAGIC) else None
    if kind is None:
        raise BackupError(f"{path} is neither a SQLite database nor a pg_dump custom-format archive")
    if kind != backend:
        raise BackupError(f"{path} is a {kind} backup; it restores into {kind} only, not into {backend}")
    revision = _sqlite_revision(path) if kind == "sqlite" else _archive_revision(path, parsed)
    _check_known(revision)
    _check_empty(url, force)
    if kind == "sqlite":
        _sqlite_restore(path, _sqlite_file(parsed))
    else:
        _run(["pg_restore", "--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction",
              f"--dbname={_libpq_url(parsed)}", str(path)], parsed)
    migrate.upgrade(url, settings=settings)
    return Restored(kind, revision, _head())


# ---- SQLite ---------------------------------------------------------------------------

def _sqlite_file(parsed: URL) -> Path:
    if not parsed.database or parsed.database == ":memory:":
        raise BackupError("the SQLite database is in memory: nothing to back up or restore")
    return Path(parsed.database)


def _sqlite_backup(source: Path, target: Path) -> None:
    if not source.is_file():
        raise BackupError(f"{source}: no such database file")
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            # pages=-1: the whole database in one step, as of one commit. In steps, a write
            # between two of them would restart the copy (and under steady writes, forever).
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        finally:
            dst.close()
    finally:
        src.close()


def _sqlite_restore(backup_file: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{backup_file}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target, timeout=30)
        try:
            # Through the backup API, not a file copy: it replaces the target's pages under
            # SQLite's own locks, its WAL included.
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=WAL")  # as the services open it (libs/store/session.py)
        finally:
            dst.close()
    finally:
        src.close()


def _sqlite_revision(path: Path) -> str | None:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        with contextlib.suppress(sqlite3.OperationalError):  # no alembic_version: not ours
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            return row[0] if row else None
        raise BackupError(f"{path} is not a scimbus database (it has no alembic_version table)")
    finally:
        conn.close()


# ---- PostgreSQL -----------------------------------------------------------------------

def _libpq_url(parsed: URL) -> str:
    """The URL as pg_dump and pg_restore read it: no driver name, no password (that goes in
    PGPASSWORD, not on a command line every user of the host can read)."""
    return parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)


def _run(argv: list[str], parsed: URL) -> str:
    tool = shutil.which(argv[0])
    if tool is None:
        raise BackupError(f"{argv[0]} is not installed; install the PostgreSQL client tools "
                          "(the same major version as the server or newer), or run the commands of "
                          "docs/deployment.md where they are")
    env = dict(os.environ)
    if parsed.password is not None:
        env["PGPASSWORD"] = str(parsed.password)
    done = subprocess.run([tool, *argv[1:]], env=env, capture_output=True, text=True, timeout=PG_TIMEOUT)
    if done.returncode != 0:
        error = " ".join(done.stderr.split())[:2000]
        raise BackupError(f"{argv[0]} failed ({done.returncode}): {error}")
    return done.stdout


def _archive_revision(path: Path, parsed: URL) -> str | None:
    """The alembic revision inside a pg_dump archive: its alembic_version rows, as the SQL
    ``pg_restore --file=-`` prints for them (nothing is restored)."""
    sql = _run(["pg_restore", "--data-only", "--table=alembic_version", "--file=-", str(path)], parsed)
    lines = sql.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("COPY ") and "alembic_version" in line:
            row = lines[n + 1] if n + 1 < len(lines) else "\\."
            return None if row == "\\." else row.split("\t")[0]
    raise BackupError(f"{path} is not a scimbus database (it has no alembic_version table)")


# ---- both -------------------------------------------------------------------------------

def _revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    return [rev.revision for rev in script.walk_revisions()]


def _head() -> str | None:
    revisions = _revisions()
    return revisions[0] if revisions else None


def _check_known(revision: str | None) -> None:
    if revision is not None and revision not in _revisions():
        raise BackupError(f"the backup is at revision {revision}, which this release does not know: "
                          "restore it with the release that made it (or a newer one)")


def _check_empty(url: str, force: bool) -> None:
    """Refuse a target holding tables. With ``force`` on PostgreSQL, drop them first (every
    table of the database, or of the schema its URL's search_path names); SQLite's backup
    API replaces the whole file anyway."""
    engine = create_engine_from_url(url)
    try:
        names = inspect(engine).get_table_names()
        if not names:
            return
        if not force:
            where = url.split("@")[-1]
            raise BackupError(f"{where} is not empty ({len(names)} tables); restore into an empty database, "
                              "or pass --force to replace everything in it")
        if engine.dialect.name != "sqlite":
            tables = MetaData()
            tables.reflect(engine)
            with engine.begin() as conn:
                tables.drop_all(conn)
    finally:
        engine.dispose()
