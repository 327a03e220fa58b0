"""A PostgreSQL streaming replica of a test's primary: pg_basebackup, then a hot standby.

``apply_delay_ms`` sets ``recovery_min_apply_delay``: the replica receives the WAL at once
but shows each commit only that long after it happened, a replica lagging on purpose.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.servers import PostgresServer, _as_postgres_user, _pg_bin, free_port


class ReplicaServer(PostgresServer):
    def __init__(self, primary: PostgresServer, apply_delay_ms: int = 0) -> None:  # not super(): it would initdb
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="scimbus-pg-replica-"))
        self.folder.chmod(0o755)
        self.data = self.folder / "data"
        self.ids, uid = _as_postgres_user()
        if uid is not None:
            os.chown(self.folder, uid, -1)
        subprocess.run([_pg_bin("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
                        "-D", str(self.data), "-R", "-X", "stream", "--no-sync", "--checkpoint=fast"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **self.ids)
        with open(self.data / "postgresql.auto.conf", "a") as conf:
            conf.write(f"recovery_min_apply_delay = '{int(apply_delay_ms)}ms'\nhot_standby = on\n")
        self.proc = None
        self.durable = primary.durable

    def replayed(self) -> int:
        done = subprocess.run([_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d",
                               "scimbus", "-tAc", "SELECT pg_last_wal_replay_lsn() - '0/0'::pg_lsn"],
                              capture_output=True, text=True, check=True)
        return int(done.stdout.strip() or 0)


def primary_position(primary: PostgresServer) -> int:
    done = subprocess.run([_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres", "-d",
                           "scimbus", "-tAc", "SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


def wait_caught_up(primary: PostgresServer, replica: ReplicaServer, timeout: float = 60) -> None:
    target = primary_position(primary)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replica.replayed() >= target:
            return
        time.sleep(0.1)
    raise TimeoutError("the replica never replayed the primary's WAL")


@contextlib.contextmanager
def primary_and_replica(apply_delay_ms: int = 0) -> Iterator[tuple[PostgresServer, ReplicaServer]]:
    primary = PostgresServer()
    primary.start()
    replica = None
    try:
        replica = ReplicaServer(primary, apply_delay_ms)
        replica.start()
        yield primary, replica
    finally:
        if replica is not None:
            replica.stop()
            shutil.rmtree(replica.folder, ignore_errors=True)
        primary.close()
