"""Per-process state of a worker: settings and store, built on first use.

Worker processes are forked by the pool; opening the store lazily in each child keeps
database connections out of the parent and out of import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from libs.config import Settings, load_settings
from libs.scim import extensions
from libs.store.access import growth_analyzer, open_store
from libs.store.directory import DirectoryStore
from libs.store.planner import GrowthAnalyzer


@dataclass
class WorkerContext:
    settings: Settings
    store: DirectoryStore
    analyzer: GrowthAnalyzer | None = None

    def __post_init__(self) -> None:
        if self.analyzer is None:
            self.analyzer = growth_analyzer(self.store)


_context: WorkerContext | None = None
_pid: int | None = None


def get_context() -> WorkerContext:
    global _context, _pid
    if _context is None or _pid != os.getpid():
        settings = load_settings()
        extensions.install(settings.file)
        _context = WorkerContext(settings, open_store(settings, pool_size=2, ping=False))
        _pid = os.getpid()
    return _context
