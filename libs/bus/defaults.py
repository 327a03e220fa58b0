"""Tunables of the write bus, one line of why each."""

JOB_FUNCTION = "services.worker.jobs.apply_writes"
"""Dotted path the front enqueues (a batch of writes): the front never imports worker code."""

DELIVER_FUNCTION = "services.deliverer.fanout.deliver"
"""Dotted path of a delivery job (the writers' after-commit fan-out, the sweeper, ``deliveries retry``)."""

JOB_FUNCTIONS = frozenset({JOB_FUNCTION, DELIVER_FUNCTION})
"""Every function a scimbus worker runs; a job naming any other is refused unread
(``libs.bus.rq_adapter``): RQ would import and call whatever a job in Redis names."""

MAX_BATCH = 64
"""Most writes one front process coalesces into one bus job."""

SLOT_WAIT = 0.5
"""Longest a front's batch waits for one of its process's in-flight slots: a batch takes
~10-60 ms, but one whose worker was killed holds its slot until RQ re-queues the job
(~15-30 s), and the writes behind it must not wait that long."""

RESULT_TTL = 60
"""Seconds a finished job's result (and its hash, with the writes) stays in Redis unless the
front deletes it first: it does, in its next enqueue, once it has read the result
(``libs.bus.queues``), so this bounds only what a front leaves when it goes idle or dies.
At 700 writes/s, 300 s of them held 230 MB of Redis."""

FAILURE_TTL = 3 * 24 * 3600
"""Seconds a failed job stays in the failed registry for an operator to inspect: a long
weekend. Its writes were answered 503 or 500 long before; the worker's log has the error."""

FAILED_KEEP = 1000
"""Most failed jobs kept per queue (``libs.bus.failures.trim_failed``): a deployment failing
every write must not fill Redis within FAILURE_TTL."""

QUEUED_TTL = 600
"""Seconds a job may wait in the queue before RQ discards it (the front gave up long before)."""

RETRIES = 3
"""Times a job is re-run after its worker died or the database failed transiently."""

RETRY_INTERVALS = [1, 3, 6]
"""Seconds before each re-run: together they ride out a database restart of ~10 s while
the front still waits (SCIM_WRITE_TIMEOUT)."""

WORKER_TTL = 20
"""Worker heartbeat TTL; RQ blocks on the queue for TTL - 15 s, so maintenance runs every ~5 s."""

MAINTENANCE_INTERVAL = 5
"""Seconds between registry clean-ups: how soon a job held by a killed worker is re-queued."""

ABANDONED_GRACE = 5
"""Seconds past a job's timeout before its started-registry entry counts as abandoned."""
