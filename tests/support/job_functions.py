"""The tests' own job functions, which the bus and pool tests enqueue, allowed in the
workers they start: scimbus's workers run only ``defaults.JOB_FUNCTIONS``.

In process: ``ScimWorker(..., job_class=WithTestJobs)``. A pool in a process of its own:
``python -m tests.support.job_functions worker …`` (the ``scimbus`` command, with them allowed).
"""

from __future__ import annotations

from libs.bus.rq_adapter import AllowedJob

TEST_FUNCTIONS = frozenset({
    "tests.libs.bus.jobs.echo", "tests.libs.bus.jobs.flaky", "tests.libs.bus.jobs.broken",
    "tests.services.slow_jobs.slow_echo", "tests.services.slow_jobs.stall_once",
})


class WithTestJobs(AllowedJob):
    functions = AllowedJob.functions | TEST_FUNCTIONS


def allow_test_jobs() -> None:
    """Allow them in this process: every worker and pool it starts loads jobs as ``AllowedJob``."""
    AllowedJob.functions = AllowedJob.functions | TEST_FUNCTIONS


if __name__ == "__main__":
    from services.cli import main

    allow_test_jobs()
    main()
