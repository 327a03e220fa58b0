"""The function RQ calls: apply a batch of writes, each exactly once, in one transaction.

A batch of several writes is first applied with no savepoints; when any write fails, that
transaction is rolled back whole (``Replay``) and the batch applied again with each write in a
savepoint of its own (``UnitOfWork.attempt``; the first write the transaction keeps needs none:
rolling back the transaction, which holds nothing else yet, undoes the same). There a SCIM
error (409, 404, 400 …) rolls back that write alone and becomes its answer; a lost uniqueness race
(``libs.store.errors.LostRace``) re-runs that write, whose pre-check then reports the
409. A database failure (``TransactionLost``) raises: RQ retries the whole batch, and the
idempotency record each write leaves in the same transaction as its change guarantees that
a batch which committed before its worker died is not applied a second time. One commit
per batch is also what makes the bus cheap: RQ's bookkeeping and the commit are paid once
for up to ``MAX_BATCH`` writes.

Before anything is applied the batch is claimed (``libs.bus.deadlines``): a batch past its
deadline, or one its front gave up on, was or will be answered 503, so it is not applied:
each of its writes answers 503, is counted (``scim_writes_expired_total``), logged at
WARNING with its id and listed for the operator (``libs.bus.expired``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rq import get_current_job

from libs.bus import deadlines, expired
from libs.bus.messages import WriteJob, WriteResult
from libs.config import Settings
from libs.metrics.metrics import WRITES_EXPIRED, observe_batch, observe_job
from libs.scim.errors import InternalError, ScimError, Unavailable, Uniqueness
from libs.scim.schemas import GROUPS, USERS
from libs.security.audit import audit_fields, rejection_row
from libs.store.errors import LostRace, Replay, TransactionLost
from libs.store.unit_of_work import UnitOfWork, unit_of_work
from services.deliverer import fanout
from services.worker import positions, writes
from services.worker.context import get_context

log = logging.getLogger("scimbus.worker")

_INTEGRITY_ATTEMPTS = 3


def apply_writes(payload: dict[str, Any]) -> dict[str, Any]:
    jobs = [WriteJob.from_payload(p) for p in payload["writes"]]
    refused = _claim_refused(jobs)
    if refused is not None:
        return refused
    started = time.perf_counter()
    results = apply_batch(jobs)
    positions.record_commit(jobs, results)  # issue 21: before the front can answer, for the replicas
    try:
        observe_batch(len(jobs), time.perf_counter() - started)
        # After the commit: a delivery job must never see a change that could still roll back.
        fanout.after_writes([job for job, result in zip(jobs, results) if result.status < 400])
        get_context().analyzer.created(sum(1 for r in results if r.status == 201))
    except Exception:
        # The writes are committed: the job must not fail now (a failed job is answered 503,
        # "never applied"); what was not enqueued here, the sweeper delivers.
        log.exception("after-commit work of a batch of %d writes failed; the writes are applied", len(jobs))
    return {"results": [r.to_payload() for r in results]}


def _claim_refused(jobs: list[WriteJob]) -> dict[str, Any] | None:
    """None when this worker may apply the batch (it claimed it); else the batch's answer:
    every write 503, none applied. Called outside RQ (no current job), the batch is applied.

    A scimbus worker claimed the batch as it started the job, in the same round trip
    (``libs.bus.rq_adapter.ScimWorker.prepare_execution``); any other RQ worker has not, and
    the batch is claimed here."""
    job = get_current_job()
    if job is None:
        return None
    state = getattr(job, "start_claim", None) or deadlines.claim(
        job.connection, job.key.decode() if isinstance(job.key, bytes) else job.key)
    if not deadlines.never_applied(state):
        return None
    WRITES_EXPIRED.inc(len(jobs))
    for write in jobs:
        log.warning("write %s (%s %s %s, request %s) not applied: %s before a worker took it (its front "
                    "answered 503)", write.job_id, write.op, write.resource_type, write.resource_id,
                    write.request_id, "given up" if state == deadlines.ABANDONED else "past its deadline")
    expired.record(job.connection, job.origin, job.id, state, jobs)
    answer = Unavailable("No worker took the write in time; it was not applied and never will be; "
                         "retry the request.")
    return {"results": [WriteResult(503, answer.to_body()).to_payload() for _ in jobs], "expired": state}


def apply_batch(jobs: list[WriteJob]) -> list[WriteResult]:
    """The batch in one transaction, first with no savepoints (two round trips fewer per
    write); when a write fails, that transaction is rolled back whole and the batch applied
    again with a savepoint for each write, where the failure is that write's alone."""
    if len(jobs) > 1:
        try:
            return _apply_batch(jobs, savepoints=False)
        except Replay as exc:
            log.info("a write of a batch of %d failed (%s); applying the batch again, each write in a "
                     "savepoint", len(jobs), exc)
    return _apply_batch(jobs, savepoints=True)


def _apply_batch(jobs: list[WriteJob], *, savepoints: bool) -> list[WriteResult]:
    ctx = get_context()
    results: list[WriteResult] = []
    records: list[dict[str, Any]] = []
    rejections: list[dict[str, Any]] = []
    observed: list[tuple[WriteJob, WriteResult, float]] = []
    with unit_of_work(ctx.store, savepoints=savepoints) as unit:
        done = unit.applied_results([job.job_id for job in jobs])
        _lock_ahead(unit, jobs, done)
        for run in _runs(jobs, done):
            if run[0].job_id in done:
                log.info("write %s already applied; answering its recorded result", run[0].job_id)
                results.append(WriteResult.from_payload(done[run[0].job_id]))
                continue
            started = time.perf_counter()
            outcomes = (_apply_creates(unit, run, ctx.settings) if len(run) > 1
                        else [_apply_one(unit, run[0], ctx.settings)])
            each = (time.perf_counter() - started) / len(run)
            for job, result in zip(run, outcomes):
                observed.append((job, result, each))
                results.append(result)
                if result.status < 400:
                    records.append(_record(job, result))
                    if (job.op, job.resource_type) not in _LEAVE_USER_ROWS_AS_READ:
                        unit.forget_users()
                else:
                    rejections.append(rejection_row(job, result.body or {}))
        # Written with the changes, in the same transaction: a batch that committed is
        # answered from these records if it ever runs again. Refusals are audited but not
        # recorded as answers: they changed nothing, and a re-run answers them afresh.
        unit.record(records, rejections)
    for job, result, each in observed:  # a replayed batch's first pass is not counted
        observe_job(job.op, job.resource_type, "ok" if result.status < 400 else str(result.status), each)
    return results


# Writes that change no row but their own user's (a user's groups are its groups' rows).
_LEAVE_USER_ROWS_AS_READ = {("create", "User"), ("replace", "User"), ("patch", "User")}


def _lock_ahead(unit: UnitOfWork, jobs: list[WriteJob], done: dict[str, Any]) -> None:
    """The rows the batch's PATCH, PUT and DELETE writes change, locked and read before any
    of them is applied, in one order every worker follows: by app, users before groups, then
    by pk (``FOR NO KEY UPDATE``: a member add elsewhere, which locks its members' rows
    KEY SHARE, never waits for them; ``FOR UPDATE`` where the batch deletes one of that
    app and type). Two workers whose batches share rows then wait for each other instead of
    deadlocking: locked write by write, two batches adding members to the same groups in
    opposite orders deadlocked, PostgreSQL noticed only after its deadlock_timeout (1 s) and
    RQ ran the batch again a second later (member adds of 16 clients over 10 groups: p99
    2.4-4.1 s). One statement per app and type instead of one per write; a write of a group
    or a delete makes the users read again (``_LEAVE_USER_ROWS_AS_READ``)."""
    targets: dict[tuple[str, str], list[str]] = {}
    deleting: set[tuple[str, str]] = set()
    for job in jobs:
        if job.op in ("patch", "replace", "delete") and job.job_id not in done:
            targets.setdefault((job.app, job.resource_type), []).append(job.resource_id)
            if job.op == "delete":
                deleting.add((job.app, job.resource_type))
    if sum(len(set(ids)) for ids in targets.values()) < 2:
        return  # one row: nothing to take out of order
    for app, resource_type in sorted(targets, key=lambda key: (key[0], key[1] != USERS.name)):
        schema = USERS if resource_type == USERS.name else GROUPS
        unit.lock_ahead(app, schema, list(dict.fromkeys(targets[(app, resource_type)])),
                        deleting=(app, resource_type) in deleting)


def _runs(jobs: list[WriteJob], done: dict[str, Any]) -> list[list[WriteJob]]:
    """The batch in order, cut into runs: consecutive creates of one app and resource type
    that touch nothing else go together (``create_many``); every other write runs alone."""
    runs: list[list[WriteJob]] = []
    for job in jobs:
        last = runs[-1] if runs else None
        if (last is not None and job.job_id not in done and last[-1].job_id not in done
                and writes.can_create_together(job) and writes.can_create_together(last[-1])
                and (job.app, job.resource_type) == (last[-1].app, last[-1].resource_type)):
            last.append(job)
        else:
            runs.append([job])
    return runs


def _apply_creates(unit: UnitOfWork, jobs: list[WriteJob], settings: Settings) -> list[WriteResult]:
    try:
        with unit.attempt():
            return writes.create_many(unit, jobs, settings)
    except Replay:
        raise
    except LostRace:  # a concurrent writer took a name first: one by one, each its own answer
        log.info("a run of %d creates lost a uniqueness race; applying them one by one", len(jobs))
    except TransactionLost:
        raise
    except Exception:
        log.exception("a run of %d creates failed; applying them one by one", len(jobs))
    return [_apply_one(unit, job, settings) for job in jobs]


def _record(job: WriteJob, result: WriteResult) -> dict[str, Any]:
    return {
        "app": job.app, "job_id": job.job_id, "request_id": job.request_id, "result": result.to_payload(),
        "change": {"resource_type": job.resource_type, "resource_id": job.resource_id, "op": job.op,
                   "version": result.version or 0, **audit_fields(job)},
    }


def _apply_one(unit: UnitOfWork, job: WriteJob, settings: Settings) -> WriteResult:
    operation = writes.OPERATIONS[job.op]
    for attempt in range(1, _INTEGRITY_ATTEMPTS + 1):
        try:
            with unit.attempt():
                return operation(unit, job, settings)
        except Replay:
            raise
        except ScimError as exc:
            return WriteResult(exc.status, exc.to_body())
        except LostRace:
            log.info("write %s lost a uniqueness race (attempt %d); re-checking", job.job_id, attempt)
        except TransactionLost:
            raise  # the transaction is gone: RQ retries the batch
        except Exception:
            log.exception("write %s failed; its neighbours in the batch go on", job.job_id)
            return WriteResult(500, InternalError().to_body())
    return WriteResult(409, Uniqueness("The write conflicts with a concurrent one; retry it.").to_body())
