"""Code that no scimbus job names. A worker that imports this module or runs ``run`` obeyed
a job planted in Redis: each leaves a marker file in the worker's var folder, which the
attack tests look for."""

from __future__ import annotations

import os
from pathlib import Path

IMPORTED, RAN = "planted-module-imported", "planted-function-ran"  # tests/services/worker/test_planted_jobs.py


def _mark(name: str) -> None:
    if os.environ.get("SCIM_VAR_DIR"):  # a stack's process
        (Path(os.environ["SCIM_VAR_DIR"]) / name).write_text(str(os.getpid()))


_mark(IMPORTED)


def run(*args, **kwargs) -> None:
    _mark(RAN)
