"""Workers run scimbus's own job functions and nothing else.

RQ stores a job's function as a dotted path in the job's Redis hash and imports it when a
worker takes the job: anyone who can write to Redis could plant a job naming
``os.system`` and an argument and have a worker run it. RQ's job hash names other code to
import too (success, failure and stopped callbacks) and, since RQ 3, web hooks the worker
calls with the job's data. A scimbus job names one of ``defaults.JOB_FUNCTIONS`` and none
of the rest, so:

- ``refusal`` says what is wrong with a job, reading only its hash (no import);
- ``AllowedJob`` is the job class of every worker, pool and registry clean-up: its function
  is imported only when allowed, it has no callbacks whatever its hash says (a clean-up of
  an abandoned job calls the failure callback), and it sends no web hook;
- the worker refuses a job ``refusal`` objects to before anything of it runs
  (``services.runtime.rq_pool.ScimWorker``), logs an error naming it, and deletes it.
"""

from __future__ import annotations

from rq.exceptions import DeserializationError
from rq.job import Job
from rq.utils import import_attribute

from libs.bus import defaults

WRITTEN_FOR = {"rq": "3.0"}
"""The library minor versions whose internals this module drives (tests/services/runtime/test_library_contracts.py)."""


MOVED: dict[str, str] = {"services.worker.fanout.deliver": defaults.DELIVER_FUNCTION}
"""Old dotted path → new, for job functions moved since a release (issue 20's layout): a
delivery enqueued by a writer of the previous release, still in Redis during an upgrade,
runs the moved function instead of being refused."""


def current_name(name: object) -> object:
    """The dotted path a job's function has now (``MOVED``), else ``name`` unchanged."""
    return MOVED.get(name, name) if isinstance(name, str) else name


class RefusedJob(Exception):
    """A job names code that is not one of scimbus's job functions."""


def refusal(job: Job, functions: frozenset[str]) -> str | None:
    """Why ``job`` must not run (None: it may), from its hash alone."""
    try:
        name, instance = current_name(job.func_name), job.instance
    except DeserializationError:
        return "its data cannot be read"
    if not isinstance(name, str) or name not in functions:
        return f"it names {str(name)[:200]!r}, which is not a scimbus job function"
    if instance is not None:
        return "it names a method of an object"
    callbacks = [kind for kind in ("success", "failure", "stopped") if getattr(job, f"_{kind}_callback_name", None)]
    if callbacks:
        return f"it names {'/'.join(callbacks)} callbacks"
    if job.webhooks:
        return "it names web hooks"
    return None


class AllowedJob(Job):
    functions: frozenset[str] = defaults.JOB_FUNCTIONS
    """The dotted paths this process runs (the tests' pools add their own job functions)."""

    @property
    def func(self):
        reason = refusal(self, self.functions)
        if reason is not None:
            raise RefusedJob(f"job {self.id} refused: {reason}")
        return import_attribute(current_name(self.func_name))

    # Scimbus sets no callback: one a hash names is never imported.
    success_callback = failure_callback = stopped_callback = property(lambda self: None)

    def send_webhooks(self, status, *, exc_string: str | None = None) -> None:
        """Scimbus sets no web hook: one a hash names is never called."""
