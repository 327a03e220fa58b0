"""The scimgateway peer's run folder, and the CPU snapshot the bench divides per write.

The run folder is laid out as an installation of the package (plugin in ``lib/``, its
configuration in ``config/``, the package in ``node_modules/``), from a checkout the bench
never changes; here the checkout is a folder holding the files the bench reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from bench.procs import cpu_by_role, role_of
from bench.scimgateway import check_source, prepare_run_folder


@pytest.fixture
def checkout(tmp_path):
    src = tmp_path / "scimgateway"
    (src / "lib").mkdir(parents=True)
    (src / "config").mkdir()
    (src / "node_modules" / "lokijs").mkdir(parents=True)
    (src / "package.json").write_text('{"name": "scimgateway", "version": "6.1.18"}')
    (src / "lib" / "scimgateway.ts").write_text("export class ScimGateway {}\n")
    (src / "lib" / "plugin-loki.ts").write_text("import Loki from 'lokijs'\n")
    (src / "lib" / "scimdef-v2.json").write_text(json.dumps({
        "Schemas": {"Resources": []}, "TestmodeUsers": {"Resources": [{"userName": "bjensen"}]},
        "TestmodeGroups": {"Resources": [{"displayName": "Admins"}]}}))
    (src / "config" / "plugin-loki.json").write_text(json.dumps({
        "scimgateway": {"port": 8880, "localhostonly": False,
                        "log": {"loglevel": {"file": "debug", "console": "error"}},
                        "auth": {"basic": [{"username": "gwadmin", "password": "password"}],
                                 "bearerToken": [{"token": None}]}},
        "endpoint": {"entity": {"undefined": {"dbname": "loki.db", "persistence": True}}}}))
    return src


def test_the_run_folder_runs_loki_in_memory_quiet_with_no_test_users_and_leaves_the_checkout_alone(
        checkout, tmp_path):
    before = {p: p.read_bytes() for p in checkout.rglob("*") if p.is_file()}
    run = tmp_path / "run"
    prepare_run_folder(check_source(checkout), run, 41234, "s3cret")

    config = json.loads((run / "config" / "plugin-loki.json").read_text())
    gw = config["scimgateway"]
    assert gw["port"] == 41234 and gw["localhostonly"] is True
    assert gw["log"]["loglevel"] == {"file": "off", "console": "off"}
    assert gw["auth"]["basic"] == [] and gw["auth"]["bearerToken"][0]["token"] == "s3cret"
    assert config["endpoint"]["entity"]["undefined"]["persistence"] is False
    scimdef = json.loads((run / "lib" / "scimdef-v2.json").read_text())
    assert "TestmodeUsers" not in scimdef and "TestmodeGroups" not in scimdef and "Schemas" in scimdef
    assert (run / "lib" / "plugin-loki.ts").read_text() == "import Loki from 'lokijs'\n"
    assert (run / "node_modules" / "scimgateway").resolve() == checkout.resolve()
    assert (run / "node_modules" / "lokijs").resolve() == (checkout / "node_modules" / "lokijs").resolve()
    assert {p: p.read_bytes() for p in checkout.rglob("*") if p.is_file()} == before


def test_a_folder_that_is_not_a_scimgateway_checkout_is_refused_by_name(tmp_path):
    with pytest.raises(RuntimeError, match="is not a scimgateway checkout: no package.json"):
        check_source(tmp_path)


def test_bun_and_postgres_processes_have_their_own_roles():
    assert role_of(["/home/x/.cache/scimbus-bench/bun/node_modules/.bin/bun", "lib/plugin-loki.ts"]) == "peer"
    assert role_of(["/usr/lib/postgresql/16/bin/postgres", "-D", "/tmp/data"]) == "postgres"
    assert role_of(["postgres: postgres scimbus 127.0.0.1(5555) idle"]) == "postgres"


def test_the_cpu_snapshot_counts_a_tree_including_children_it_has_reaped():
    # a parent that runs a CPU-bound child to its end: the child's time is the parent's reaped time
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    parent = subprocess.Popen([sys.executable, "-c",
                               f"import subprocess, sys, time; subprocess.run([sys.executable, '-c', {burn!r}]); "
                               "time.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while (spent := sum(cpu_by_role([parent.pid]).values())) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert spent >= 0.3
    finally:
        parent.kill()
        parent.wait()


def _checkout():
    """A scimgateway checkout where the Makefile looks for one (it is not on the npm registry)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    for candidate in (os.environ.get("SCIMGATEWAY"), root / "var" / "scimgateway", root.parent / "scimgateway-src",
                      root.parent / "wt" / "scimgateway-src"):
        if candidate and (Path(candidate) / "lib" / "plugin-loki.ts").exists():
            return Path(candidate)
    return None


@pytest.mark.stack
@pytest.mark.skipif(_checkout() is None, reason="no scimgateway checkout at var/scimgateway, ../scimgateway-src "
                                                "or $SCIMGATEWAY")
def test_the_bench_runs_the_workload_against_scimgateway_with_no_error(tmp_path):
    from pathlib import Path

    from bench.load import OPERATIONS

    report = tmp_path / "bench.json"
    tiny = ["--users", "12", "--concurrency", "4", "--groups", "2", "--members-per-group", "3",
            "--directory-size", "40", "--reads", "30", "--read-concurrency", "4", "--fill-concurrency", "4",
            "--big-group", "20", "--small-group", "3", "--group-add-samples", "3", "--big-patch", "25",
            "--big-patch-repeats", "1", "--timeout", "20"]
    run = subprocess.run([sys.executable, "-m", "bench", "--start", *tiny, "--no-peer", "--scimgateway",
                          str(_checkout()), "--json", str(report)],
                         cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr[-4000:]}"
    gateway = json.loads(report.read_text())["servers"]["scimgateway"]
    assert "summary" in gateway, gateway
    ops = gateway["summary"]["operations"]
    assert {op for op in OPERATIONS if ops[op]["count"]} == set(OPERATIONS)
    assert gateway["summary"]["errors"] == 0, gateway["summary"]["error_samples"]
    assert ops["create-user"]["count"] == 12 and gateway["timing"]["directory_size"] == 40
    assert gateway["timing"]["phase_cpu"]["patch"]["cpu_s"]["peer"] >= 0
    assert "== scimgateway  http://127.0.0.1:" in run.stdout and "side by side with scimgateway" in run.stdout


@pytest.mark.skipif(_checkout() is None, reason="no scimgateway checkout at var/scimgateway, ../scimgateway-src "
                                                "or $SCIMGATEWAY")
def test_scimgateway_starts_empty_and_asks_for_its_token(tmp_path):
    from bench.client import Client
    from bench.scimgateway import ensure_bun, ensure_dependencies, running_scimgateway

    source = check_source(_checkout())
    ensure_dependencies(source)
    with running_scimgateway(source, ensure_bun(), tmp_path) as peer:
        with Client(peer.url, {"Authorization": f"Bearer {peer.token}"}, 20) as client:
            for endpoint in ("/Users", "/Groups"):  # its two built-in test users and groups left out
                answer = client.get(endpoint)
                assert answer.status_code == 200 and answer.json()["totalResults"] == 0, answer.text
        with Client(peer.url, {"Authorization": "Bearer wrong"}, 20) as client:
            assert client.get("/Users").status_code == 401
    assert not (tmp_path / "scimgateway" / "logs").exists() or not any((tmp_path / "scimgateway" / "logs").iterdir())
