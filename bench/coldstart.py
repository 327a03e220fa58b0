"""Cold start of a worker and a deliverer: ``python -m bench.coldstart [--runs 5] [--postgres]``.

Scale to zero (KEDA ``minReplicaCount: 0``) puts a role's whole start in front of the
first write it takes: the job is queued first, then the process is started, exactly as
KEDA wakes a Deployment. Each run queues one job (a create, as the front enqueues it; for
the deliverer, the delivery that the worker's commit queued to a web hook), execs the
role's real command (``scimbus worker`` / ``scimbus deliverer``, one process), and times
it from ``exec`` to:

- ``interpreter``: the first line of Python (interpreter start, ``site``);
- ``imports, set-up``: the pool forks its first worker (every import, settings, the pool);
- ``registered``: the forked worker registered with Redis (its first connection);
- ``job taken``: the queue's list is empty, the job in the worker's hands;
- ``job done``: the write's result is written (the database connection and the write
  itself), or the hook received the delivery.

The first two stamps come from a wrapper around the real entry point: ``time.time()`` as
its first statement and an audit hook on ``os.fork``; the others from Redis (the worker's
``birth``), a poll of the queue every ``POLL`` seconds, and the job (or the hook).

``--bytecode`` chooses where the compiled modules come from, to show what a pre-compiled
image saves: ``compiled`` (every module has its ``.pyc``, the state of a normal install),
``stdlib-source`` (the standard library compiled from source at each start, as in an
image built on ``python:3.11-slim``, whose Dockerfile deletes every ``.pyc``, with
``PYTHONDONTWRITEBYTECODE=1`` and a read-only root file system), or ``source`` (nothing
compiled). Each is a private ``PYTHONPYCACHEPREFIX``, filled by one untimed start of each
role (``Bench.prime``).
``--importtime`` prints the heaviest imports of each role (``python -X importtime``).

``--image NAME`` (repeatable) times the same cold starts in containers of an image, run as
Kubernetes runs them (read-only root file system, ``/tmp`` in memory; here on the host's
network, the bench's folder mounted at its own path): ``interpreter`` then counts from
``docker run`` and includes the container's creation. ``make images`` (issue 17) builds
``scimbus:0.1.0``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402
from rq import Worker  # noqa: E402
from rq.job import Job  # noqa: E402

from libs.bus.messages import WriteJob  # noqa: E402
from libs.bus.queues import Bus  # noqa: E402
from libs.bus.serializer import OrjsonSerializer  # noqa: E402
from libs.store.migrate import upgrade  # noqa: E402
from tests.support.servers import RedisServer, postgres_server  # noqa: E402
from tests.support.targets import HookReceiver  # noqa: E402

PHASES = ("interpreter", "imports, set-up", "registered", "job taken", "job done")
POLL = 0.002
"""Seconds between two looks at the queue's length (a Redis LLEN, ~50 µs of its time)."""
SECRET = "coldstart-" + "s" * 24

_WRAPPER = """\
import time
_t = time.time()
import os, sys
def _stamp(name, at):
    with open(os.environ["COLDSTART_STAMPS"], "a") as out:
        out.write(f"{name} {at!r}\\n")
_stamp("main", _t)
def _on_fork(event, args, _seen=[]):
    if event == "os.fork" and not _seen:
        _seen.append(True)
        _stamp("fork", time.time())
sys.addaudithook(_on_fork)
from services.cli import main
main(sys.argv[1:])
"""
"""The role's real entry point, with two stamps: the first line of Python and the first fork."""

ROLES = {
    "worker": (["worker", "--processes", "1", "--metrics-port", "0"], "scim-writes",
               "services.cli, services.worker.pool, libs.bus.rq_adapter, services.worker.jobs"),
    "deliverer": (["deliverer", "--processes", "1", "--metrics-port", "0"], "scim-deliveries",
                  "services.cli, services.cli.deliveries, services.deliverer.pool, services.deliverer.fanout"),
}


def _user(i: int) -> dict:
    name = f"cold-{uuid.uuid4().hex[:12]}@contoso.com"
    return {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name, "active": True,
            "name": {"givenName": "Cold", "familyName": str(i)}}


def bytecode_cache(mode: str, folder: Path) -> dict[str, str]:
    """Environment giving the roles' interpreter the compiled modules ``mode`` names (once
    ``Bench.prime`` has filled them in): a private cache folder that nothing writes to while timed."""
    if mode == "installed":
        return {}
    return {"PYTHONPYCACHEPREFIX": str(folder / f"pycache-{mode}"), "PYTHONDONTWRITEBYTECODE": "1"}


class Bench:
    """Cold starts of the roles as processes of this host (``image`` None) or as containers of ``image``."""

    def __init__(self, folder: Path, redis_url: str, database_url: str, hook: HookReceiver, pycache: dict,
                 image: str | None = None) -> None:
        self.folder, self.image = folder, image
        self.redis = Redis.from_url(redis_url)
        self.bus = Bus(self.redis, "scim-writes", job_timeout=10)
        config = folder / "scimbus.toml"
        config.write_text(f'[connectors.hook]\ntype = "webhook"\nurl = "{hook.url}"\nsecret = "{SECRET}"\n'
                          "[connectors.hook.users]\n")
        self.hook = hook
        self.settings = {"SCIM_REDIS_URL": redis_url, "SCIM_DATABASE_URL": database_url, "SCIM_VAR_DIR": str(folder),
                         "SCIM_TOKEN": "coldstart", "SCIM_LOG_LEVEL": "WARNING", "SCIM_CONFIG_FILE": str(config)}
        self.env = {**os.environ, **pycache, **self.settings}
        self.runs = 0

    def prime(self, mode: str) -> None:
        """One untimed start of each role that may write bytecode to the cache folder: every
        module the roles import, to their first job, compiled once (``compiled``); then
        without the standard library's (``stdlib-source``)."""
        if mode not in ("compiled", "stdlib-source"):
            return
        timed = self.env
        self.env = {k: v for k, v in timed.items() if k != "PYTHONDONTWRITEBYTECODE"}
        for role in ("worker", "deliverer"):
            self.run(role)
        self.env = timed
        if mode == "stdlib-source":
            shutil.rmtree(Path(timed["PYTHONPYCACHEPREFIX"]) / sysconfig.get_paths()["stdlib"].lstrip("/"))

    def _start(self, args: list[str], stamps: Path) -> subprocess.Popen:
        if self.image is None:
            return subprocess.Popen([sys.executable, "-c", _WRAPPER, *args], cwd=ROOT,
                                    env={**self.env, "COLDSTART_STAMPS": str(stamps)},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # As Kubernetes runs it (read-only root, /tmp in memory), on the host's network and with
        # the bench's folder at the same path; as this host's user, so both may write its files.
        self.container = f"scimbus-coldstart-{uuid.uuid4().hex[:8]}"
        settings = [f"--env={k}={v}" for k, v in {**self.settings, "COLDSTART_STAMPS": str(stamps)}.items()]
        return subprocess.Popen(["docker", "run", "--rm", f"--name={self.container}", "--network=host", "--read-only",
                                 "--tmpfs=/tmp", f"--user={os.getuid()}:{os.getgid()}",
                                 f"--volume={self.folder}:{self.folder}", *settings, "--entrypoint=python",
                                 self.image, "-c", _WRAPPER, *args],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _stop(self, proc: subprocess.Popen) -> None:
        if self.image is None:
            proc.terminate()
        else:
            subprocess.run(["docker", "stop", "--time=30", self.container], capture_output=True, check=False)
        proc.wait(60)

    def run(self, role: str) -> dict[str, float]:
        """One cold start of ``role`` with one job waiting: seconds from exec to each phase."""
        args, queue, _ = ROLES[role]
        self.runs += 1
        if role == "worker":
            batch = uuid.uuid4().hex
            self.write = WriteJob(job_id=uuid.uuid4().hex, op="create", app="default", resource_type="User",
                                  resource_id=str(uuid.uuid4()), body=_user(self.runs))
            self.bus.submit_batch(batch, [self.write])
        elif not self.redis.llen(f"rq:queue:{queue}"):
            raise RuntimeError("no delivery queued: run the worker first")
        delivered = len(self.hook.events)
        stamps = self.folder / f"stamps-{self.runs}"
        started = time.time()
        proc = self._start(args, stamps)
        try:
            taken = self._wait(lambda: not self.redis.llen(f"rq:queue:{queue}"), proc)
            if role == "worker":
                self._wait(lambda: self.redis.exists(f"rq:results:{batch}"), proc)
                done = Job.fetch(batch, connection=self.redis, serializer=OrjsonSerializer).ended_at.timestamp()
            else:
                self._wait(lambda: len(self.hook.events) > delivered, proc)
                done = self.hook.arrivals[delivered]
            births = [w.birth_date.timestamp() for w in Worker.all(connection=self.redis)
                      if queue in w.queue_names() and w.birth_date and w.birth_date.timestamp() >= started]
        finally:
            self._stop(proc)
        marks = dict(line.split() for line in stamps.read_text().splitlines())
        points = (float(marks["main"]), float(marks["fork"]), min(births), taken, done)
        return {phase: at - started for phase, at in zip(PHASES, points)}

    def _wait(self, condition, proc: subprocess.Popen, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while not condition():
            if proc.poll() is not None:
                raise RuntimeError(f"the role exited with {proc.returncode} before its first job")
            if time.monotonic() > deadline:
                raise TimeoutError("no first job after a minute")
            time.sleep(POLL)
        return time.time()


def import_profile(role: str, env: dict[str, str], top: int = 12) -> list[tuple[str, float]]:
    """(top-level package, ms of its own import time) for the modules ``role`` loads before its pool forks."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {ROLES[role][2]}"],
                            cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    own: dict[str, int] = {}
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line.split(":", 1)[1].split("|")
        package = name.strip().split(".")[0]
        own[package] = own.get(package, 0) + int(self_us)
    total = sum(own.values()) / 1000
    ranked = sorted(own.items(), key=lambda item: -item[1])[:top]
    return [("(all)", total)] + [(name, us / 1000) for name, us in ranked]


def _print_table(role: str, label: str, runs: list[dict[str, float]]) -> dict[str, float]:
    medians = {phase: statistics.median(r[phase] for r in runs) for phase in PHASES}
    print(f"\n{role}, {len(runs)} cold starts, {label}  (seconds from exec; median [min-max])")
    previous = 0.0
    for phase in PHASES:
        values = [r[phase] for r in runs]
        print(f"  {phase:<16} {medians[phase]:6.3f}  [{min(values):.3f}-{max(values):.3f}]"
              f"   (+{medians[phase] - previous:.3f})")
        previous = medians[phase]
    return medians


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.coldstart", description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=5, help="cold starts per role and bytecode mode")
    p.add_argument("--postgres", action="store_true", help="PostgreSQL as the store (default: SQLite)")
    p.add_argument("--bytecode", action="append", choices=("compiled", "stdlib-source", "source", "installed"),
                   help="repeatable (default: compiled and stdlib-source, none with --image); "
                        "installed: this venv as it is")
    p.add_argument("--image", action="append", default=[],
                   help="repeatable: also start the roles as containers of this image (Docker, read-only root)")
    p.add_argument("--importtime", action="store_true", help="print each role's heaviest imports")
    p.add_argument("--json", help="write the medians to this file")
    args = p.parse_args(argv)
    modes = args.bytecode if args.bytecode is not None else ([] if args.image else ["compiled", "stdlib-source"])
    results: dict[str, dict[str, dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scimbus-coldstart-")))
        database_url = (stack.enter_context(postgres_server()) if args.postgres
                        else f"sqlite:///{folder / 'coldstart.db'}")
        upgrade(database_url)
        redis_server = RedisServer(folder / "redis")
        redis_server.start()
        stack.callback(redis_server.close)
        hook = stack.enter_context(HookReceiver(SECRET))
        print(f"cold start to the first job, store {'PostgreSQL' if args.postgres else 'SQLite'}, "
              f"Python {sys.version.split()[0]}, {os.cpu_count()} cores", flush=True)
        variants = [(f"bytecode: {mode}", mode, None) for mode in modes] + \
                   [(f"container of {image}", "installed", image) for image in args.image]
        benches = [Bench(folder, redis_server.url, database_url, hook, bytecode_cache(mode, folder), image)
                   for _, mode, image in variants]
        for (_, mode, _), bench in zip(variants, benches):
            bench.prime(mode)
        runs: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.runs):  # interleaved (A, B, A, B): this host's speed drifts between runs
            for (label, _, _), bench in zip(variants, benches):
                for role in ("worker", "deliverer"):  # the worker's commit queues the deliverer's job
                    runs.setdefault((label, role), []).append(bench.run(role))
        for (label, _, image), bench in zip(variants, benches):
            for role in ("worker", "deliverer"):
                results.setdefault(role, {})[label] = _print_table(role, label, runs[(label, role)])
                if args.importtime and image is None:
                    profile = import_profile(role, bench.env)
                    print("  imports (ms of own time): " + ", ".join(f"{n} {ms:.0f}" for n, ms in profile))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
