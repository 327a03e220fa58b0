"""``make bench`` in miniature: ``python -m bench --start`` with tiny numbers.

The bench starts its own stack, runs every phase, and prints its table; every operation
must show a non-zero rate and no error, and the exit status must be 0.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ("query-miss", "create-user", "query-hit", "patch-user-name", "patch-user-disable",
              "create-group", "patch-group-add", "get-group")


@pytest.mark.stack
def test_bench_starts_a_stack_and_reports_every_operation_without_error(tmp_path):
    report = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--start", "--users", "20", "--concurrency", "4", "--groups", "3",
         "--members-per-group", "4", "--json", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=55)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr[-4000:]}"

    rows = {}
    for line in run.stdout.splitlines():
        cells = line.split()
        if cells and cells[0] in OPERATIONS:
            rows[cells[0]] = cells
    assert set(rows) == set(OPERATIONS), run.stdout
    for op, (_name, count, rate, p50, p95, p99, top, errors) in rows.items():
        assert int(count) > 0 and float(rate) > 0, f"{op}: {rows[op]}"
        assert float(p50) <= float(p95) <= float(p99) <= float(top), f"{op}: {rows[op]}"
        assert errors == "0", f"{op}: {rows[op]}\n{run.stdout}"
    assert re.search(r"^total\s+\d+\s+0 \(0\.00%\)$", run.stdout, re.M), run.stdout
    # the stack it started: a memory line per service role
    for role in ("front", "reader", "worker", "gateway", "redis"):
        assert re.search(rf"^{role}\s+\d+\s+\d+\.\d", run.stdout, re.M), run.stdout

    data = json.loads(report.read_text())
    assert data["errors"] == 0 and not data["failed"]
    assert data["operations"]["create-user"]["count"] == 20
    assert data["operations"]["patch-group-add"]["count"] == 12
