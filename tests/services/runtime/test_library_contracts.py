"""The library internals scimbus drives, held to the library versions installed.

RQ's worker, pool, scheduler and job, gunicorn's gthread worker and honcho's manager are
extended by subclasses that override methods and read private attributes, one adapter
module per library: ``libs/bus/rq_adapter.py`` (RQ), ``services/runtime/gunicorn_worker.py``
(gunicorn), ``services/runtime/ordered_stop.py`` (honcho). A new release may rename or re-sign any of them without a deprecation, and the
first sign would be a worker that quietly stops respawning. So each adapter module names
the minor versions it was written for (``WRITTEN_FOR``), pyproject.toml allows only those
(tests/test_dependencies.py), and this test fails loudly, naming the method or attribute,
when an upgrade changes what an adapter relies on:

- every method an adapter overrides still exists in the library with the same parameters
  (an adapter may add optional ones);
- every private name (``self._x``, ``obj._x``) an adapter reads but does not define itself
  still appears in the library class it extends;
- the private module-level names imported from the library still exist.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from importlib.metadata import version

import pytest

from libs.bus import rq_adapter
from services.runtime import gunicorn_worker, ordered_stop

ADAPTER_MODULES = {"rq": rq_adapter, "gunicorn": gunicorn_worker, "honcho": ordered_stop}
"""The one module per library that drives its internals."""
ADAPTERS = (rq_adapter.ScimWorker, rq_adapter._Pool, rq_adapter.AllowedJob, gunicorn_worker.EpollWorker,
            gunicorn_worker._Connection, ordered_stop.OrderedManager)

INTERNALS = {  # module-level names the adapters import from a library
    "rq.executions": ["WORKER_EXECUTIONS_KEY_TEMPLATE", "Execution", "ExecutionRegistry"],
    "rq.worker": ["WorkerStatus"],
    "rq.worker_registration": ["REDIS_WORKER_KEYS", "WORKERS_BY_QUEUE_KEY"],
    "rq.utils": ["as_text", "current_timestamp", "parse_composite_key", "import_attribute", "now", "utcformat"],
    "rq.scripts": ["UNIQUE_ENQUEUE_SCRIPT"],
    "rq.scheduler": ["RQScheduler"],
    "gunicorn.workers.gthread": ["STOP_KEEPALIVE_LINGER", "TConn", "ThreadWorker"],
    "honcho.manager": ["SYSTEM_PRINTER_NAME", "Manager"],
}

SCHEDULER_CALLS = ("acquired_locks", "acquire_locks", "release_locks", "register_birth", "register_death",
                   "heartbeat", "enqueue_scheduled_jobs")
"""What ``rq_adapter.PoolScheduler`` calls on RQ's scheduler (by composition, not a subclass)."""


def _library_bases(cls: type) -> list[type]:
    return [base for base in cls.__mro__[1:] if not base.__module__.startswith(("services.", "libs.", "builtins"))]


def _forwards_everything(function) -> bool:
    """``def f(self, *args, **kwargs)``: whatever the library passes, it passes on."""
    kinds = {p.kind for p in inspect.signature(function).parameters.values()}
    return {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD} <= kinds


def _parameters(function) -> list[str]:
    return [p.name for p in inspect.signature(function).parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


@pytest.mark.parametrize("module", ADAPTER_MODULES.values(), ids=lambda m: m.__name__)
def test_each_adapter_runs_on_the_library_versions_it_was_written_for(module):
    for library, minor in module.WRITTEN_FOR.items():
        installed = ".".join(version(library).split(".")[:2])
        assert installed == minor, (f"{module.__name__} was written for {library} {minor}, {installed} is installed: "
                                    "check the internals it drives, then update WRITTEN_FOR and pyproject.toml")


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda c: c.__qualname__)
def test_every_overridden_method_keeps_the_librarys_parameters(adapter):
    bases = _library_bases(adapter)
    for name, ours in vars(adapter).items():
        if not inspect.isfunction(ours) or name.startswith("__") and name != "__init__":
            continue
        theirs = next((vars(b)[name] for b in bases if name in vars(b)), None)
        if theirs is None or not callable(theirs) or _forwards_everything(ours):
            continue
        mine, library = _parameters(ours), _parameters(theirs)
        extras = list(inspect.signature(ours).parameters.values())[len(library):]
        # the library's parameters, then only optional ones of ours (the library never passes them)
        assert mine[:len(library)] == library and all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                                                      for p in extras), \
            f"{adapter.__qualname__}.{name}{inspect.signature(ours)} overrides {theirs.__qualname__}{inspect.signature(theirs)}"


def _private_names_read(cls: type) -> set[str]:
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    read = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr.startswith("_")
            and not n.attr.startswith("__")}
    own = {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    own |= {t.attr for n in ast.walk(tree) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))
            for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Attribute)}
    own |= {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    return read - own


@pytest.mark.parametrize("adapter", ADAPTERS, ids=lambda c: c.__qualname__)
def test_every_private_name_an_adapter_reads_is_still_the_librarys(adapter):
    sources = "\n".join(inspect.getsource(b) for b in _library_bases(adapter))
    module_sources = "\n".join(inspect.getsource(importlib.import_module(b.__module__))
                               for b in _library_bases(adapter))
    gone = sorted(name for name in _private_names_read(adapter)
                  if name not in sources and name not in module_sources)
    assert gone == [], f"{adapter.__qualname__} reads {gone}, which its library no longer defines"


@pytest.mark.parametrize("module", sorted(INTERNALS))
def test_the_module_level_internals_imported_still_exist(module):
    missing = [name for name in INTERNALS[module] if not hasattr(importlib.import_module(module), name)]
    assert missing == [], f"{module} no longer has {missing}"


def test_the_scheduler_the_pool_runs_still_offers_what_the_pool_calls():
    from rq.scheduler import RQScheduler

    missing = [name for name in SCHEDULER_CALLS if name not in inspect.getsource(RQScheduler)]
    assert missing == [], f"rq.scheduler.RQScheduler no longer has {missing}"


def _calls(function) -> list[str]:
    """The names a function calls, in the order they appear in its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    calls = [(n.lineno, n.col_offset, n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", "?"))
             for n in ast.walk(tree) if isinstance(n, ast.Call)]
    return [name for *_, name in sorted(calls)]


def _in_order(calls: list[str], *names: str) -> bool:
    positions = [calls.index(name) if name in calls else -1 for name in names]
    return -1 not in positions and positions == sorted(positions)


def test_the_job_bookkeeping_the_worker_trims_is_where_rq_does_it():
    """``ScimWorker`` (``libs.bus.rq_adapter``) does RQ's bookkeeping of a job in two
    transactions, each cut safe only while RQ calls it as 3.0 does:

    - ``prepare_execution`` does ``prepare_job_execution``'s part too, which it then skips:
      SimpleWorker runs the first right before ``perform_job``, which runs the second first;
    - ``handle_execution_ended`` skips the job hash's ``last_heartbeat``: RQ's
      ``Job.heartbeat`` writes that field alone (no started-registry score, which is what
      decides that a job was abandoned);
    - ``handle_job_success`` replaces RQ's: the steps below are the ones it keeps or drops
      (dependents, statistics, the finished registry) and, for a job kept for no time, the
      keys ``Job.delete`` deletes; a step RQ adds must be looked at."""
    from rq.job import Job
    from rq.worker import BaseWorker, SimpleWorker

    assert _calls(SimpleWorker.execute_job) == ["prepare_execution", "perform_job", "set_state"]
    assert _in_order(_calls(BaseWorker.perform_job), "prepare_job_execution", "perform", "_finalize_success")
    assert _in_order(_calls(BaseWorker._finalize_success), "handle_execution_ended", "handle_job_success")
    assert set(_calls(BaseWorker.handle_execution_ended)) == {"now", "heartbeat"}
    assert set(_calls(Job.heartbeat)) == {"hset", "utcformat"}
    assert set(_calls(BaseWorker.handle_job_success)) - {"debug", "info", "pipeline", "multi", "execute"} == {
        "watch", "move_dependents_to_ready", "increment_successful_job_count", "increment_total_working_time",
        "get_result_ttl", "_handle_success", "schedule", "cleanup", "cleanup_execution",
        "enqueue_ready_jobs_by_queue", "release_slot"}
    assert set(_calls(Job._handle_success)) == {"debug", "set_status", "save", "create", "add"}
    # A job kept for no time: what RQ deletes of it (ScimWorker deletes its keys the same)
    assert set(_calls(Job.cleanup)) == {"delete", "expire"}
    assert set(_calls(Job.delete)) == {"_remove_from_registries", "delete_dependents", "delete", "fetch",
                                       "delete_job", "get_key", "cancel", "from_job"}


def test_the_writes_the_worker_sends_as_scripts_are_still_rqs():
    """``ScimWorker`` sends RQ 3.0's writes for a job's start and success as one script each
    (``rq_adapter._START``, ``_SUCCEED``) rather than through RQ's methods: each method whose
    writes a script repeats must still write what it wrote in 3.0 (tests/libs/bus/
    test_worker_bookkeeping.py compares a started job with RQ's own start, key by key)."""
    from rq import executions
    from rq.executions import Execution, ExecutionRegistry
    from rq.job import Job
    from rq.registry import StartedJobRegistry
    from rq.results import Result
    from rq.worker import BaseWorker

    writes = {  # the start
        executions.prepare_execution: {"create", "execute", "get_heartbeat_ttl", "pipeline", "set_state"},
        Execution.create: {"ExecutionRegistry", "add", "add_execution", "cls", "expire", "sadd", "save", "uuid4"},
        Execution.save: {"expire", "hset", "serialize"},
        ExecutionRegistry.add: {"current_timestamp", "expire", "zadd"},
        StartedJobRegistry.add_execution: {"current_timestamp", "zadd"},
        BaseWorker.set_state: {"hset"},
        BaseWorker.heartbeat: {"debug", "expire", "hset", "now", "utcformat"},
        Job.prepare_for_execution: {"hset", "now", "utcformat"},
        BaseWorker.prepare_job_execution: {"Queue", "debug", "execute", "format", "get_heartbeat_ttl", "heartbeat",
                                           "lrem", "now", "persist", "pipeline", "prepare_for_execution", "procline",
                                           "time"},
        # the success
        executions.cleanup_execution: {"debug", "delete", "pop"},
        Execution.delete: {"ExecutionRegistry", "delete", "remove", "remove_execution", "srem"},
        ExecutionRegistry.remove: {"zrem"},
        StartedJobRegistry.remove_execution: {"zrem"},
        Result.save: {"decode", "expire", "get_key", "persist", "serialize", "xadd"},
    }
    changed = [f.__qualname__ for f, calls in writes.items() if set(_calls(f)) != calls]
    assert changed == [], f"RQ's {changed} changed: check rq_adapter._START and _SUCCEED against them"
    assert list(Execution.serialize(Execution("e", "j", None, "w"))) == [  # type: ignore[arg-type]
        "id", "job_id", "created_at", "last_heartbeat", "worker_name"]


def test_a_renamed_private_name_would_be_caught():
    class Adapter(ordered_stop.Manager):
        def terminate(self) -> None:
            return self._gone_in_a_future_release

    assert "_gone_in_a_future_release" in _private_names_read(Adapter)
    assert "_gone_in_a_future_release" not in inspect.getsource(ordered_stop.Manager)


@pytest.mark.parametrize("library", sorted(ADAPTER_MODULES))
def test_only_the_adapter_of_a_library_imports_from_its_internal_modules(library):
    """A library's public names (``rq.Queue``, ``gunicorn.app``) may be used anywhere; what
    lies below them (``rq.scripts``, ``gunicorn.workers.gthread``, ``honcho.manager``) only
    in its adapter, so an upgrade is checked in one module."""
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[3]
    adapter = pathlib.Path(inspect.getfile(ADAPTER_MODULES[library])).resolve()
    public = {"rq": {"rq", "rq.job", "rq.queue", "rq.results", "rq.exceptions", "rq.registry", "rq.serializers",
                     "rq.command"},
              "gunicorn": {"gunicorn", "gunicorn.app.base", "gunicorn.app.wsgiapp", "gunicorn.arbiter"},
              "honcho": {"honcho"}}[library]
    found = []
    for path in sorted([*(root / "libs").rglob("*.py"), *(root / "services").rglob("*.py")]):
        if path.resolve() == adapter:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom)
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            found += [f"{path.relative_to(root)}:{node.lineno} {name}" for name in names
                      if name.split(".")[0] == library and name not in public]
    assert found == [], f"{library} internals outside {adapter.name}: {found}"
