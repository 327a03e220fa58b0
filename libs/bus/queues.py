"""Enqueue a write and wait for its result: the front's whole view of the bus.

The wait reads the job's RQ result stream with a blocking ``XREAD`` (no polling). A
``RETRIED`` entry means a worker died or hit a transient failure and RQ re-queued the job:
the front keeps waiting on the same stream. ``FAILED`` after the last retry, or no result
within the bounded wait, becomes ``Unavailable`` (503 + Retry-After): the client retries,
and because the job id is the idempotency key a late run of the first attempt is harmless.
"""

from __future__ import annotations

import time

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.results import Result
from rq.serializers import JSONSerializer

from libs.bus import defaults
from libs.bus.messages import WriteJob, WriteResult
from libs.scim.errors import Unavailable


class Bus:
    """The front's handle on the write queue (lives in ``app.extensions['scim.bus']``)."""

    def __init__(self, redis: Redis, queue_name: str, *, job_timeout: int,
                 function: str = defaults.JOB_FUNCTION) -> None:
        self.redis = redis
        self.function = function
        self.queue = Queue(queue_name, connection=redis, serializer=JSONSerializer)
        self.job_timeout = job_timeout

    def submit(self, job: WriteJob) -> None:
        try:
            self.queue.enqueue(
                self.function, job.to_payload(),
                job_id=job.job_id,
                job_timeout=self.job_timeout,
                result_ttl=defaults.RESULT_TTL,
                failure_ttl=defaults.FAILURE_TTL,
                ttl=defaults.QUEUED_TTL,
                retry=Retry(max=defaults.RETRIES),
                description=f"{job.op} {job.resource_type} {job.resource_id}",
                unique=True,
            )
        except DuplicateJobError:
            pass  # already queued under this idempotency key: wait for that one
        except RedisError as exc:
            raise Unavailable("The write queue is unreachable; nothing was changed.") from exc

    def apply(self, job: WriteJob, timeout: float) -> WriteResult:
        """Submit one write and wait for its result."""
        self.submit(job)
        return self.await_result(job.job_id, timeout)

    def apply_in_order(self, jobs: list[WriteJob], timeout: float) -> list[WriteResult]:
        """Apply several writes one after the other (Bulk): each sees the ones before it."""
        return [self.apply(job, timeout) for job in jobs]

    def await_result(self, job_id: str, timeout: float) -> WriteResult:
        key = Result.get_key(job_id)
        last_id = "0-0"
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # Short blocks: a socket timeout of the client must never cut a wait short.
                response = self.redis.xread({key: last_id}, block=max(1, int(min(remaining, 2.0) * 1000)))
                if not response:
                    continue
                for entry_id, payload in response[0][1]:
                    last_id = entry_id
                    outcome = self._outcome(job_id, entry_id, payload)
                    if outcome is not None:
                        return outcome
        except RedisError as exc:
            raise Unavailable("The write queue became unreachable while waiting; retry the request.") from exc
        raise Unavailable("No worker confirmed the write in time; retry the request.")

    def _outcome(self, job_id: str, entry_id: bytes, payload: dict[bytes, bytes]) -> WriteResult | None:
        result = Result.restore(job_id, entry_id.decode(), payload, connection=self.redis, serializer=JSONSerializer)
        if result.type == Result.Type.SUCCESSFUL:
            return WriteResult.from_payload(result.return_value)
        if result.type == Result.Type.RETRIED:
            return None
        raise Unavailable("The write failed in the worker; it has been logged. Retry the request.")
