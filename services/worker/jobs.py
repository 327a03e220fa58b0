"""The one function RQ calls: decode a write job, apply it exactly once, answer its result.

A SCIM error (409, 404, 400 …) is an answer, not a job failure: it is returned as the
result and the transaction is rolled back. A lost uniqueness race (``IntegrityError``)
re-runs the write, whose pre-check then reports the 409. Anything else (the database is
down, a bug) raises: RQ retries the job, and the idempotency record written in the same
transaction as the change guarantees a job that committed before its worker died is not
applied a second time.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy.exc import IntegrityError

from libs.bus.messages import WriteJob, WriteResult
from libs.metrics.metrics import observe_job
from libs.scim.errors import ScimError
from libs.security.audit import audit_fields, record_rejection
from services.worker.context import get_context
from services.worker.writes import OPERATIONS

log = logging.getLogger("scimbus.worker")

_INTEGRITY_ATTEMPTS = 3


def apply_write(payload: dict[str, Any]) -> dict[str, Any]:
    job = WriteJob.from_payload(payload)
    started = time.perf_counter()
    outcome = "error"
    try:
        result = _apply(job)
        outcome = "ok" if result.status < 400 else f"{result.status}"
        return result.to_payload()
    finally:
        observe_job(job.op, job.resource_type, outcome, time.perf_counter() - started)


def _apply(job: WriteJob) -> WriteResult:
    ctx = get_context()
    store = ctx.store
    operation = OPERATIONS[job.op]
    for attempt in range(1, _INTEGRITY_ATTEMPTS + 1):
        try:
            with store.transaction() as conn:
                stored = store.applied_result(conn, job.job_id)
                if stored is not None:
                    log.info("job %s already applied; answering its recorded result", job.job_id)
                    return WriteResult.from_payload(stored)
                result = operation(store, conn, job, ctx.settings)
                change = None
                if result.status < 400:
                    change = {"resource_type": job.resource_type, "resource_id": job.resource_id,
                              "op": job.op, "version": result.version or 0, **audit_fields(job)}
                store.record(conn, app=job.app, job_id=job.job_id, result=result.to_payload(), change=change,
                             request_id=job.request_id)
                return result
        except ScimError as exc:
            record_rejection(store, job, exc)
            return WriteResult(exc.status, exc.to_body())
        except IntegrityError:
            if attempt == _INTEGRITY_ATTEMPTS:
                raise
            log.info("job %s lost a uniqueness race (attempt %d); re-checking", job.job_id, attempt)
    raise AssertionError("unreachable")
