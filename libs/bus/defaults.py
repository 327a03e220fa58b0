"""Tunables of the write bus, one line of why each."""

JOB_FUNCTION = "services.worker.jobs.apply_write"
"""Dotted path the front enqueues: the front never imports worker code."""

RESULT_TTL = 300
"""Seconds a job's result stays in Redis: long enough for the waiting front, no longer."""

FAILURE_TTL = 7 * 24 * 3600
"""Seconds a failed job stays in the failed registry for an operator to inspect."""

QUEUED_TTL = 600
"""Seconds a job may wait in the queue before RQ discards it (the front gave up long before)."""

RETRIES = 3
"""Times a job is re-run after its worker died or the database failed transiently."""

WORKER_TTL = 20
"""Worker heartbeat TTL; RQ blocks on the queue for TTL - 15 s, so maintenance runs every ~5 s."""

MAINTENANCE_INTERVAL = 5
"""Seconds between registry clean-ups: how soon a job held by a killed worker is re-queued."""

ABANDONED_GRACE = 5
"""Seconds past a job's timeout before its started-registry entry counts as abandoned."""
