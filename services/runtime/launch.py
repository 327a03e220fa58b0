"""Starting a role's processes: the gunicorn roles (front, reader) and the RQ pool roles
(worker, deliverer). The CLI commands call these; they sit here so that every command
module of services/cli/ reaches them without importing another command module."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from libs.config import Settings


def prepare_metrics(settings: Settings, role: str) -> None:
    from libs.metrics.multiproc import prepare_metrics_dir

    base = Path(settings.metrics_dir) if settings.metrics_dir else settings.var_dir / "metrics"
    prepare_metrics_dir(base, role)


def gunicorn(settings: Settings, role: str, module: str, *, binds: list[str], workers: int, threads: int,
             worker_sockets: str | None = None) -> None:
    """Replace this process with gunicorn serving ``module:app`` (never returns)."""
    from services.runtime import probe

    prepare_metrics(settings, role)
    probe.record(role, next((u for u in map(probe.probe_url, binds) if u), None))
    threads_variable = "SCIM_READER_THREADS" if role == "reader" else "SCIM_HTTP_THREADS"
    os.environ.update({"SCIM_BIND": ",".join(binds), "SCIM_HTTP_WORKERS": str(workers),
                       threads_variable: str(threads), "SCIM_ROLE": f"scimbus-{role}"})
    if worker_sockets:
        os.environ["SCIM_WORKER_SOCKETS"] = worker_sockets
    # glibc gives each thread that allocates an arena of its own (up to 8 per core): 16 request
    # threads spread a worker's garbage over up to 16 heaps that each keep their high-water
    # mark. Two arenas cut the front's peak PSS by ~4-5 MB under load and the reader's by ~9
    # MB after GETs of a 30,000-member group; CPython allocates under the GIL, so two arenas
    # are not contended.
    os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "-c", "python:services.runtime.gunicorn_conf",
                               f"{module}:app"])


def run_pool_role(settings: Settings, role: str, module: str, *, processes: int, metrics_port: int) -> None:
    """A pool role (worker, deliverer): fresh metrics files, its readiness URL recorded for
    ``scimbus health``, then ``module.run_pool``. The module is imported only after the
    metrics folder is set, since importing it defines the metrics."""
    from services.runtime import probe

    prepare_metrics(settings, role)
    if metrics_port:
        probe.record(role, f"http://127.0.0.1:{metrics_port}/readyz")
    importlib.import_module(module).run_pool(settings, processes=processes, metrics_port=metrics_port)
