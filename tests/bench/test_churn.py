"""``python -m bench.churn`` in miniature: 3,000 writes through a directory of 50 users.

With a change retention of seconds, the ``changes`` table levels off well below the
count of writes while the directory keeps its size; ``applied_writes`` keeps every write
of the run, which is younger than a bus job's life (libs/store/retention.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WRITES, DIRECTORY = 3000, 50
RETENTION, INTERVAL = 2, 1


@pytest.mark.stack
def test_churn_levels_the_changes_off_while_the_directory_keeps_its_size(tmp_path):
    out = tmp_path / "churn.json"
    run = subprocess.run([sys.executable, "-m", "bench.churn", "--writes", str(WRITES), "--every", "1000",
                          "--directory", str(DIRECTORY), "--concurrency", "4", "--change-retention", f"{RETENTION}s",
                          "--retention-interval", str(INTERVAL), "--json", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr[-4000:]}"
    result = json.loads(out.read_text())
    points = result["points"]
    assert [p["writes"] // 1000 for p in points][:3] == [0, 1, 2] and points[-1]["writes"] >= WRITES
    assert len(run.stdout.splitlines()) == len(points) + 1  # a line per point, and the total
    last = points[-1]
    # Levelled off: what is left is the last few seconds' writes (the 2 s retention, a sweep
    # every 1 s, and a second of slack), however fast the machine wrote them; never the run's.
    rate = last["writes"] / last["seconds"]
    assert last["rows"]["changes"] < min(rate * (RETENTION + 2 * INTERVAL + 1), WRITES * 3 / 4), points
    assert last["rows"]["resources"] <= DIRECTORY
    assert last["rows"]["applied_writes"] >= WRITES  # a re-run may still come: every record stays
    assert result["errors"] == {}
