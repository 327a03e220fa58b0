"""The second peer the bench compares with: scimgateway (jelhub/scimgateway), loki plugin, under Bun.

scimgateway is what sites pick instead of scimbus. It is not on the npm registry: the bench
is given a checkout of its repository (``--scimgateway PATH``) and skips this peer, saying
so, without one. Everything else comes from the npm registry through ``npm`` itself:

- Bun: ``npm install bun@1`` into a cache folder outside the repository
  (``$SCIM_BENCH_CACHE``, default ``~/.cache/scimbus-bench``), once;
- scimgateway's dependencies: ``npm install --ignore-scripts --omit=dev`` in the checkout,
  once (its ``postinstall`` copies plugins into the folder *above* the package: skipped).

It runs as its documented installation does (the package under ``node_modules/scimgateway``,
the plugin in ``lib/``, its configuration in ``config/``), in a temporary run folder:

- only the loki plugin (``bun lib/plugin-loki.ts``), in memory (``persistence: false``);
- console and file logging off (``loglevel: off``), a bearer token, loopback only;
- its two built-in test users and groups left out: loki loads them whenever persistence is
  off, from the SCIM definition file; the run folder's ``lib/scimdef-v2.json`` (scimgateway
  reads one there before its own: its documented override) is its own without them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from bench.peer import Peer

BUN_PACKAGE = "bun@1"
PLUGIN = "plugin-loki"


def cache_dir() -> Path:
    return Path(os.environ.get("SCIM_BENCH_CACHE") or Path.home() / ".cache" / "scimbus-bench")


def _npm(args: list[str], cwd: Path, timeout: float = 900) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed (Bun and scimgateway's dependencies come from the npm registry)")
    done = subprocess.run([npm, *args, "--no-audit", "--no-fund"], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"npm {' '.join(args)} failed in {cwd}:\n{done.stdout[-1500:]}{done.stderr[-1500:]}")


def ensure_bun(log=print) -> Path:
    """Bun's executable, from ``npm install bun@1`` in the cache folder on first use."""
    folder = cache_dir() / "bun"
    exe = folder / "node_modules" / ".bin" / "bun"
    if not exe.exists():
        log(f"bench: installing {BUN_PACKAGE} into {folder} (first use) ...")
        folder.mkdir(parents=True, exist_ok=True)
        _npm(["install", BUN_PACKAGE], folder)
    if not exe.exists():
        raise RuntimeError(f"npm install {BUN_PACKAGE} left no {exe}")
    return exe


def check_source(source: Path) -> Path:
    source = source.expanduser().resolve()
    for part in ("package.json", f"lib/{PLUGIN}.ts", "lib/scimgateway.ts", "lib/scimdef-v2.json",
                 f"config/{PLUGIN}.json"):
        if not (source / part).exists():
            raise RuntimeError(f"{source} is not a scimgateway checkout: no {part}")
    return source


def ensure_dependencies(source: Path, log=print) -> None:
    if not (source / "node_modules" / "lokijs").exists():
        log(f"bench: npm install --ignore-scripts --omit=dev in {source} (first use) ...")
        _npm(["install", "--ignore-scripts", "--omit=dev"], source)


def prepare_run_folder(source: Path, run: Path, port: int, token: str) -> None:
    """``run/{lib,config,node_modules}`` laid out like an installation of the package."""
    (run / "lib").mkdir(parents=True, exist_ok=True)
    (run / "config").mkdir(exist_ok=True)
    modules = run / "node_modules"
    modules.mkdir(exist_ok=True)
    # the plugin resolves `scimgateway` and `lokijs` from here: the package and its dependencies
    (modules / "scimgateway").symlink_to(source, target_is_directory=True)
    for dep in (source / "node_modules").iterdir():
        if dep.name != "scimgateway" and not (modules / dep.name).exists():
            (modules / dep.name).symlink_to(dep, target_is_directory=dep.is_dir())
    shutil.copyfile(source / "lib" / f"{PLUGIN}.ts", run / "lib" / f"{PLUGIN}.ts")

    scimdef = json.loads((source / "lib" / "scimdef-v2.json").read_text())
    scimdef.pop("TestmodeUsers", None)
    scimdef.pop("TestmodeGroups", None)
    (run / "lib" / "scimdef-v2.json").write_text(json.dumps(scimdef))

    config = json.loads((source / "config" / f"{PLUGIN}.json").read_text())
    gw = config["scimgateway"]
    gw["port"] = port
    gw["localhostonly"] = True
    gw.setdefault("log", {})["loglevel"] = {"file": "off", "console": "off"}
    gw["log"]["logDirectory"] = str(run / "logs")
    gw["auth"]["basic"] = []
    gw["auth"]["bearerToken"] = [{"token": token, "readOnly": False, "baseEntities": []}]
    for entity in config["endpoint"]["entity"].values():
        entity["persistence"] = False
    (run / "config" / f"{PLUGIN}.json").write_text(json.dumps(config, indent=2))


def mode(source: Path) -> str:
    version = json.loads((source / "package.json").read_text()).get("version", "?")
    return f"scimgateway {version} (loki plugin, in memory, under Bun), one process"


@contextlib.contextmanager
def running_scimgateway(source: Path, bun: Path, tmp: Path, timeout: float = 60.0) -> Iterator[Peer]:
    from tests.support.servers import free_port, wait_for_port

    port = free_port()
    token = secrets.token_hex(16)
    run = tmp / "scimgateway"
    prepare_run_folder(source, run, port, token)
    log_path = tmp / "scimgateway.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(bun), f"lib/{PLUGIN}.ts"], cwd=run, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    peer = Peer(proc, f"http://127.0.0.1:{port}", token, log_path)
    try:
        wait_for_port(port, timeout=timeout, proc=proc)
        yield peer
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
