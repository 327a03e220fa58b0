"""The scimgateway peer's run folder, and the CPU snapshot the bench divides per write.

The run folder is laid out as an installation of the package (plugin in ``lib/``, its
configuration in ``config/``, the package in ``node_modules/``), from a checkout the bench
never changes; here the checkout is a folder holding the files the bench reads.
"""

from __future__ import annotations

import json
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
