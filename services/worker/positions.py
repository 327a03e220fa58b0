"""After a batch committed: record the commit's WAL position for the reader's replicas.

Called by ``jobs.apply_writes`` after the commit and before the result is published, so by
the time the front answers a write, a read of that app knows how far a replica must have
replayed to show it (``libs.bus.commits``, ``libs.store.replicas``). Only while a reader
announces that it reads replicas (``commits.Announced``, looked at once a second at most):
without one, the query and the script would be a round trip each per batch for nothing, and
the reader that comes later fences the writes it missed (see ``libs.bus.commits``). On
SQLite there is no position and nothing is recorded. A Redis error is raised, not
swallowed: RQ runs the batch again (each write answers from its idempotency record) rather
than acknowledge a write a replica could hide from the next read; and when the announcement
cannot be read, the position is recorded.
"""

from __future__ import annotations

from rq import get_current_job

from libs.bus import commits
from libs.store.access import commit_position
from services.worker.context import get_context

_announced = commits.Announced()


def record_commit(jobs: list, results: list) -> None:
    apps = {job.app for job, result in zip(jobs, results) if result.status < 400}
    current = get_current_job()
    if not apps or current is None or not _announced(current.connection):
        return
    position = commit_position(get_context().store)
    if position is not None:
        commits.record(current.connection, {app: position for app in apps})
