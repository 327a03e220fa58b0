"""Job functions moved by the services/ layout (issue 20) still run when a job names the old
path: a delivery a writer of the previous release enqueued is in Redis during an upgrade."""

from __future__ import annotations

from redis import Redis

from libs.bus import defaults
from libs.bus.rq_adapter import MOVED, AllowedJob, refusal

NEVER_CONNECTED = Redis(port=1)  # building a job object sends nothing to Redis


def _job(function: str) -> AllowedJob:
    return AllowedJob.create(function, args=({},), connection=NEVER_CONNECTED)


def test_a_delivery_named_by_its_old_path_runs_the_moved_function():
    from services.deliverer.fanout import deliver

    job = _job("services.worker.fanout.deliver")
    assert refusal(job, AllowedJob.functions) is None
    assert job.func is deliver


def test_every_moved_path_leads_to_a_job_function_of_today():
    assert set(MOVED.values()) <= defaults.JOB_FUNCTIONS


def test_an_old_path_that_was_never_a_job_function_stays_refused():
    assert "not a scimbus job function" in refusal(_job("services.worker.fanout.sweep"), AllowedJob.functions)
