"""Whoever can write to Redis plants jobs for the workers of a running stack (the processes
``make run`` starts): jobs naming code of their choosing, and scimbus's own functions with
callbacks or web hooks attached. None of it is imported or run; each job is refused with a
logged error."""

from __future__ import annotations

import time

import pytest
from rq import Queue
from rq.callbacks import Callback
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer
from rq.webhook import Webhook

from libs.bus import defaults
from libs.bus.serializer import OrjsonSerializer
from tests.support.targets import HookReceiver

pytestmark = pytest.mark.stack

PLANTED = "tests.support.planted.run"  # never imported here: importing it leaves a marker
IMPORTED, RAN = "planted-module-imported", "planted-function-ran"  # tests.support.planted's markers
QUEUES = ((defaults.JOB_FUNCTION, "scim-writes", OrjsonSerializer, {"writes": []}, {"writes": "not a list"}),
          (defaults.DELIVER_FUNCTION, "scim-deliveries", JSONSerializer,
           {"connector": "none", "app": "default", "resource_type": "User", "resource_id": "x"}, {}))


def _ended(job: Job) -> bool:
    """Refused (deleted), or run to an end by a worker that obeyed it."""
    try:
        return job.get_status() in (JobStatus.FINISHED, JobStatus.FAILED)
    except InvalidJobOperation:  # no status: the job is gone, refused (even between two reads)
        return True


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)  # the workers' refusal is the same on either store
def test_jobs_planted_in_redis_run_no_code_of_the_planters_choosing(stack):
    redis = stack.redis()
    refused_before = stack.log().count("refused job")
    with HookReceiver("s" * 32) as hook:
        planted, abandoned = [], []
        for function, name, serializer, fine, failing in QUEUES:
            queue = Queue(name, connection=redis, serializer=serializer)
            planted += [
                queue.enqueue("os.system", f"touch {stack.var_dir / ('os-system-ran-' + name)}"),
                queue.enqueue(PLANTED),  # importing its module is already running code
                queue.enqueue(function, fine, on_success=Callback(PLANTED)),
                queue.enqueue(function, failing, on_failure=Callback(PLANTED)),
                queue.enqueue(function, failing, webhooks=[Webhook(hook.url, "failed", method="POST")]),
            ]
            # A job left behind by a dead worker: the registry clean-up calls its failure
            # callback and its web hooks.
            job = queue.create_job(function, args=(failing,), on_failure=Callback(PLANTED),
                                   webhooks=[Webhook(hook.url, "failed", method="POST")])
            job.save()
            job.set_status(JobStatus.STARTED)
            redis.zadd(StartedJobRegistry(queue=queue).key, {f"{job.id}:planted": 1})
            abandoned.append(job)
        deadline = time.monotonic() + 30  # the clean-up runs every MAINTENANCE_INTERVAL seconds
        while not all(map(_ended, planted + abandoned)):
            assert time.monotonic() < deadline, ("the workers left planted jobs untouched: "
                                                 f"{[j.id for j in planted + abandoned if not _ended(j)]}")
            time.sleep(0.2)
        time.sleep(0.5)  # a web hook goes out after its job ended
        assert sorted(p.name for p in stack.var_dir.iterdir() if p.name.startswith(("os-system-ran", IMPORTED, RAN))
                      ) == []
        assert hook.received == 0
    assert not any(job.exists(job.id, redis) for job in planted)  # refused jobs are not kept
    refusals = [line for line in stack.log().splitlines() if "refused job" in line][refused_before:]
    assert len(refusals) == len(planted), refusals
