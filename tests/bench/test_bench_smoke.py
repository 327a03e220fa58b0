"""``make bench`` in miniature: ``python -m bench --start`` with tiny numbers, peer included.

The bench starts its own stack, runs every phase against it, then against scim2-server
(installed on first use into ``var/bench-peer/``; PyPI is reachable where this runs), and
prints a block per server, the side-by-side table and the targets of issue 7. Every
scimbus operation must show a non-zero rate and no error, and the exit status must be 0;
the peer's figures are reported, never judged here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.load import OPERATIONS
from bench.procs import role_of

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--users", "12", "--concurrency", "4", "--groups", "2", "--members-per-group", "3",
        "--directory-size", "40", "--reads", "30", "--read-concurrency", "4", "--fill-concurrency", "4",
        "--big-group", "20", "--small-group", "3", "--group-add-samples", "3",
        "--big-patch", "25", "--big-patch-repeats", "1", "--timeout", "20"]
TARGETS = ("creates/s", "userName eq GETs/s", "userName eq GET p99", "one add:", "members in one PATCH",
           "every service <= 150 MB")


def _block(stdout: str, title: str) -> str:
    """The lines of one ``== title`` block of the report, up to the next block."""
    match = re.search(rf"^== {re.escape(title)}.*?(?=^== |\Z)", stdout, re.M | re.S)
    assert match, f"no block {title!r} in:\n{stdout}"
    return match.group(0)


@pytest.mark.stack
def test_bench_runs_scimbus_and_the_peer_and_prints_the_targets(tmp_path):
    report = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "bench", "--start", *TINY, "--peer-big-group", "10",
                          "--json", str(report)],
                         cwd=ROOT, capture_output=True, text=True, timeout=58)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr[-4000:]}"
    out = run.stdout
    data = json.loads(report.read_text())
    peer_measured = "summary" in data["servers"].get("peer", {})

    # scimbus's own block: every operation ran, with ordered latencies and no error
    ours = _block(out, "scimbus")
    rows = {cells[0]: cells for line in ours.splitlines()
            if (cells := line.split()) and cells[0] in OPERATIONS}
    assert set(rows) == set(OPERATIONS), ours
    for op, (_name, count, rate, p50, p95, p99, top, errors) in rows.items():
        assert int(count) > 0 and float(rate) > 0, f"{op}: {rows[op]}"
        assert float(p50) <= float(p95) <= float(p99) <= float(top), f"{op}: {rows[op]}"
        assert errors == "0", f"{op}: {rows[op]}\n{out}"
    assert re.search(r"^total\s+\d+\s+0 \(0\.00%\)$", ours, re.M), ours
    for role in ("front", "reader", "worker", "gateway", "redis"):  # a memory line per service role
        assert re.search(rf"^{role}\s+\d+\s+\d+\.\d", ours, re.M), ours

    # the side-by-side table has a scimbus and a peer column for every operation
    side = _block(out, "side by side")
    header = side.splitlines()[1]
    assert "scimbus ops/s" in header and "peer ops/s" in header and "ops/s ratio" in header, side
    for op in OPERATIONS:
        line = next((ln for ln in side.splitlines() if ln.split()[:1] == [op]), None)
        assert line is not None, side
        if peer_measured:
            assert len(line.split()) == 12 and line.split()[6] != "-", line  # the peer's ops/s too
    # the targets, each with scimbus's value, the peer's, the ratio and a verdict
    targets = _block(out, "targets of issue 7")
    for name in TARGETS:
        line = next((ln for ln in targets.splitlines() if ln.startswith(name) or name in ln), None)
        assert line is not None, f"no target {name!r}:\n{targets}"
        assert re.search(r"\b(PASS|FAIL)$", line), line
    assert re.search(r"^\d+ of \d+ targets hold$", targets, re.M), targets

    # issue 19: the CPU per write of every process of scimbus over each write phase, and the
    # targets against both peers; scimgateway is skipped, saying so, without --scimgateway
    cpu = _block(out, "CPU per write by process")
    for writes in ("creates (fill)", "PATCH name+manager", "PATCH active", "member PATCH", "all writes"):
        line = next((ln for ln in cpu.splitlines() if ln.startswith("scimbus") and writes in ln), None)
        assert line is not None, f"no {writes!r} row:\n{cpu}"
    for role in ("front", "worker", "redis", "gateway", "reader"):
        assert role in cpu.splitlines()[1].split(), cpu
    assert data["servers"]["scimgateway"] == {"skipped": "no --scimgateway PATH given (a checkout of "
                                                         "jelhub/scimgateway)"}
    assert "== scimgateway: not measured (no --scimgateway PATH" in out
    targets19 = _block(out, "targets of issue 19")
    for name in ("creates/s", "PATCH/s", "member PATCH/s", "userName eq GETs/s", "CPU per write",
                 "PATCH/s (x4) >= creates/s"):
        line = next((ln for ln in targets19.splitlines() if ln.startswith(name)), None)
        assert line is not None and re.search(r"\b(PASS|FAIL|n/a)$", line), f"{name!r}:\n{targets19}"
    assert "scimgateway not measured: no --scimgateway PATH" in targets19
    all_writes = data["servers"]["scimbus"]["timing"]["phase_cpu"]
    assert all_writes["patch"]["requests"] == 24 and all_writes["patch"]["cpu_s"]["worker"] > 0, all_writes

    assert data["servers"]["scimbus"]["summary"]["errors"] == 0 and not data["failed"]
    ops = data["servers"]["scimbus"]["summary"]["operations"]
    assert ops["create-user"]["count"] == 12 and ops["patch-group-add"]["count"] == 6
    assert ops["fill-create"]["count"] == 28 and ops["patch-many-members"]["count"] == 1
    assert ops["add-big-group"]["count"] == ops["add-small-group"]["count"] == 3
    assert {t["key"] for t in data["targets"]} >= {"creates_1x", "reads_rate", "reads_p99", "big_group_add",
                                                    "big_patch", "memory"}
    if peer_measured:
        peer = data["servers"]["peer"]
        assert peer["summary"]["operations"]["create-user"]["count"] == 12
        assert "peer" in peer["services"]  # the peer's memory, sampled like a service
        # what the peer refuses of Entra's shapes is reported, and the peer was sent something it accepts
        notes = peer["timing"]["dialect"]["notes"]
        assert all(isinstance(n, str) for n in notes)
        assert "peer substitutions" in side
        # the peer built a smaller big group, and the report says so instead of comparing the two
        assert peer["timing"]["plan"]["big_group"] == 10
        assert data["servers"]["scimbus"]["timing"]["plan"]["big_group"] == 20
        assert "the peer's big group has 10 members (--peer-big-group)" in targets
        big_add = next(t for t in data["targets"] if t["key"] == "big_group_add")
        assert big_add["ratio"] is None, big_add


def test_the_peer_process_is_its_own_service_role():
    assert role_of(["/x/venv/bin/python", "/x/venv/bin/scim2-server", "--port", "1"]) == "peer"
    assert role_of(["/x/venv/bin/scim2-server", "--port", "1"]) == "peer"
    launched = ["/x/venv/bin/python", "-c", "from scim2_server.testserver.cli import main", "--port", "1"]
    assert role_of(launched) == "peer"  # started with a larger listen backlog (--peer-backlog)
    assert role_of(["python", "-m", "services.cli", "run"]) == "run"


def test_the_delivery_roles_are_their_own_services_not_the_supervisor():
    for role in ("deliverer", "sweeper"):
        assert role_of(["/x/venv/bin/python", "/x/venv/bin/scimbus", role, "--metrics-port", "1"]) == role
        assert role_of(["/bin/sh", "-c", f"scimbus {role} --metrics-port 1"]) == role
    assert role_of(["/x/venv/bin/python", "/x/venv/bin/scimbus", "worker", "--processes", "2"]) == "worker"


@pytest.mark.redis
def test_the_cold_start_bench_times_a_worker_and_a_deliverer_from_exec_to_their_first_job(tmp_path):
    report = tmp_path / "coldstart.json"
    run = subprocess.run([sys.executable, "-m", "bench.coldstart", "--runs", "1", "--bytecode", "installed",
                          "--json", str(report)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr[-4000:]}"
    from bench.coldstart import PHASES

    for role in ("worker", "deliverer"):
        assert f"{role}, 1 cold starts, bytecode: installed" in run.stdout
        phases = json.loads(report.read_text())[role]["bytecode: installed"]
        times = [phases[p] for p in PHASES]
        assert 0 < times[0] and times == sorted(times), phases  # each phase after the one before
