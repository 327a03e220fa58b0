"""Backup and restore of the store (libs/store/backup.py), without the services: what a
restore refuses, and that a backup from an older release restores and upgrades. The restore
of a live directory, taken while writes run, is tests/services/cli/test_backup_restore.py."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from libs.config import load_settings
from libs.store.backup import BackupError, backup, restore
from libs.store.migrate import upgrade
from libs.store.session import create_engine_from_url
from tests.libs.store import test_upgrades, upgrade_fixtures as fx

pytestmark = pytest.mark.db


@contextlib.contextmanager
def scratch_databases(backend: str, tmp_path, postgres_url: Callable[[], str]) -> Iterator[Callable[[], str]]:
    """``new()`` makes an empty store: a SQLite file, or a database of its own on the test
    cluster (pg_dump and pg_restore work on whole databases); dropped at the end."""
    made: list[str] = []

    def new() -> str:
        name = f"bk_{uuid.uuid4().hex[:12]}"
        if backend == "sqlite":
            return f"sqlite:///{tmp_path / (name + '.db')}"
        admin = create_engine_from_url(postgres_url()).execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.engine.dispose()
        made.append(name)
        return make_url(postgres_url()).set(database=name).render_as_string(hide_password=False)

    try:
        yield new
    finally:
        if made:
            admin = create_engine_from_url(postgres_url()).execution_options(isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                for name in made:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def new_store(request, tmp_path) -> Iterator[Callable[[], str]]:
    with scratch_databases(request.param, tmp_path, lambda: request.getfixturevalue("postgres_url")) as new:
        yield new


def _settings(url: str, tmp_path):
    return load_settings(database_url=url, var_dir=tmp_path, token=test_upgrades.STATIC_TOKEN,
                         key_encryption_key=fx.KEY_ENCRYPTION_KEY)


def _filled_at(url: str, revision: str, tmp_path) -> fx.Expected:
    upgrade(url, revision, settings=_settings(url, tmp_path))
    engine = create_engine_from_url(url)
    try:
        with engine.begin() as conn:
            return test_upgrades.FIXTURES[revision](conn)
    finally:
        engine.dispose()


def _revision(url: str) -> str:
    engine = create_engine_from_url(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    finally:
        engine.dispose()


def test_a_backup_taken_by_an_older_release_restores_and_is_upgraded_to_head(new_store, tmp_path):
    source, target = new_store(), new_store()
    expected = _filled_at(source, "0003", tmp_path)  # plaintext signing key: 0005 seals it on restore
    backup(source, tmp_path / "old.backup")
    done = restore(tmp_path / "old.backup", target, settings=_settings(target, tmp_path))
    assert (done.from_revision, done.to_revision) == ("0003", test_upgrades.revisions()[-1])
    assert _revision(target) == test_upgrades.revisions()[-1]
    assert _revision(source) == "0003"  # the backup read it, nothing more
    test_upgrades._assert_reads_back_through_the_api(target, tmp_path, expected)


def test_restore_refuses_a_target_holding_tables_and_force_replaces_them(new_store, tmp_path):
    source, target = new_store(), new_store()
    expected = _filled_at(source, "0005", tmp_path)
    upgrade(source, settings=_settings(source, tmp_path))
    backup(source, tmp_path / "a.backup")
    _filled_at(target, "0004", tmp_path)  # another directory, at another revision
    with pytest.raises(BackupError, match="is not empty .* pass --force"):
        restore(tmp_path / "a.backup", target, settings=_settings(target, tmp_path))
    assert _revision(target) == "0004"  # untouched
    restore(tmp_path / "a.backup", target, force=True, settings=_settings(target, tmp_path))
    test_upgrades._assert_reads_back_through_the_api(target, tmp_path, expected)


def test_backup_keeps_an_existing_file_unless_forced(new_store, tmp_path):
    source = new_store()
    upgrade(source, settings=_settings(source, tmp_path))
    path = tmp_path / "kept.backup"
    path.write_bytes(b"yesterday's backup")
    with pytest.raises(BackupError, match="exists"):
        backup(source, path)
    assert path.read_bytes() == b"yesterday's backup"
    backup(source, path, force=True)
    assert path.read_bytes() != b"yesterday's backup"
    assert not path.with_name(path.name + ".partial").exists()


def test_a_backup_from_a_newer_release_is_refused_before_the_target_is_touched(new_store, tmp_path):
    source, target = new_store(), new_store()
    upgrade(source, settings=_settings(source, tmp_path))
    engine = create_engine_from_url(source)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    backup(source, tmp_path / "new.backup")
    with pytest.raises(BackupError, match="revision 9999, which this release does not know"):
        restore(tmp_path / "new.backup", target)
    engine = create_engine_from_url(target)
    try:
        from sqlalchemy import inspect

        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_a_file_that_is_no_backup_is_refused(new_store, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a database")
    with pytest.raises(BackupError, match="neither a SQLite database nor a pg_dump"):
        restore(path, new_store())


def test_a_sqlite_backup_restores_into_sqlite_only(tmp_path, postgres_url):
    source = f"sqlite:///{tmp_path / 'source.db'}"
    upgrade(source, settings=_settings(source, tmp_path))
    backup(source, tmp_path / "sqlite.backup")
    with pytest.raises(BackupError, match="is a sqlite backup; it restores into sqlite only, not into postgresql"):
        restore(tmp_path / "sqlite.backup", postgres_url)
