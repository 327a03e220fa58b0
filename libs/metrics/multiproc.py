"""Point prometheus-client at a fresh per-role folder *before* any metric is created."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def prepare_metrics_dir(base: Path, role: str) -> Path:
    folder = base / role
    shutil.rmtree(folder, ignore_errors=True)  # stale files from a previous run would double-count
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder
