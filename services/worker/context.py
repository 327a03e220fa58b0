"""Per-process state of a worker: settings, engine and store, built on first use.

Worker processes are forked by the pool; building the engine lazily in each child keeps
database connections out of the parent and out of import time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from libs.config import Settings, load_settings
from libs.scim import extensions
from libs.store.directory import DirectoryStore
from libs.store.planner import GrowthAnalyzer
from libs.store.session import create_engine_from_url


@dataclass
class WorkerContext:
    settings: Settings
    store: DirectoryStore
    analyzer: GrowthAnalyzer | None = None

    def __post_init__(self) -> None:
        if self.analyzer is None:
            self.analyzer = GrowthAnalyzer(self.store.engine)


_context: WorkerContext | None = None
_pid: int | None = None


def get_context() -> WorkerContext:
    global _context, _pid
    if _context is None or _pid != os.getpid():
        settings = load_settings()
        extensions.install(settings.file)
        _context = WorkerContext(settings, DirectoryStore(create_engine_from_url(settings.database, pool_size=2, ping=False)))
        _pid = os.getpid()
    return _context
