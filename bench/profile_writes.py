"""``python -m bench.profile_writes``: where a write's CPU goes in the worker and in the front.

py-spy cannot read this machine's Python, so each role is profiled in-process with cProfile
on a private PostgreSQL (or ``--database-url``):

- worker: ``services.worker.jobs.apply_batch`` on batches of Entra's writes (creates, then
  PATCHes of ``name.familyName``, of the enterprise ``manager`` and of ``active``, then
  member adds), ``--batch`` writes per job as the front's coalescing makes them;
- front: the PATCH request path up to the bus (body parse, checks, ``WriteJob``), with the
  bus replaced by an answer made of the request (the round trip to Redis is measured by
  the bench's CPU per process, not here).

It prints CPU microseconds per write by phase and, with ``--top N``, cProfile's functions by
cumulative and own time. Numbers are CPU of this process only (``time.process_time``). The
rq role also counts what each bus job costs in Redis: the commands Redis ran (its ``INFO
commandstats``, scripts' own calls included), the replies the worker parsed and its round
trips (``--commands``: the commands by name).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import contextlib
import io
import os
import pstats
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


def _patch(*ops: dict) -> dict:
    return {"schemas": [PATCH_OP], "Operations": list(ops)}


def _job(op: str, rtype: str, rid: str, body=None):
    from libs.bus.messages import WriteJob

    return WriteJob(job_id=uuid.uuid4().hex, op=op, app="default", resource_type=rtype, resource_id=rid,
                    body=body, meta={"answer": False, "members": False, "password_hashed": True})


def worker_phases(users: int) -> dict[str, list]:
    from bench.load import user_body

    ids = [str(uuid.uuid4()) for _ in range(users)]
    groups = [str(uuid.uuid4()) for _ in range(max(1, users // 10))]
    return {
        "create": [_job("create", "User", i, user_body(f"{i}@contoso.com")) for i in ids],
        "patch-name": [_job("patch", "User", i, _patch({"op": "Replace", "path": "name.familyName",
                                                         "value": "F" + i[:6]})) for i in ids],
        "patch-manager": [_job("patch", "User", i, _patch({"op": "Add", "path": f"{ENTERPRISE}:manager",
                                                            "value": ids[(k + 1) % len(ids)]}))
                          for k, i in enumerate(ids)],
        "patch-active": [_job("patch", "User", i, _patch({"op": "Replace", "path": "active", "value": "False"}))
                         for i in ids],
        "create-group": [_job("create", "Group", g, {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                                     "displayName": f"g-{g}"}) for g in groups],
        "member-add": [_job("patch", "Group", groups[k % len(groups)],
                            _patch({"op": "Add", "path": "members", "value": [{"value": i}]}))
                       for k, i in enumerate(ids)],
    }


def profile_worker(database_url: str, users: int, batch: int, top: int, only: str | None) -> None:
    from sqlalchemy import event

    from libs.config import load_settings
    from libs.store.directory import DirectoryStore
    from libs.store.migrate import upgrade
    from libs.store.session import create_engine_from_url
    from services.worker import context
    from services.worker.jobs import apply_batch

    upgrade(database_url)
    engine = create_engine_from_url(database_url, pool_size=2, ping=False)
    context._context = context.WorkerContext(load_settings(), DirectoryStore(engine))
    context._pid = os.getpid()
    # Round trips to the database: every statement (savepoints included) and every commit.
    statements = [0]

    def count(*_args: object) -> None:
        statements[0] += 1

    event.listen(engine, "before_cursor_execute", count)
    event.listen(engine, "commit", count)
    for name, jobs in worker_phases(users).items():
        profiler = cProfile.Profile(time.process_time) if top and (only is None or only == name) else None
        statements[0] = 0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        for start in range(0, len(jobs), batch):
            results = apply_batch(jobs[start:start + batch])
            bad = [r for r in results if r.status >= 400]
            if bad:
                raise SystemExit(f"{name}: {bad[0].status} {bad[0].body}")
        if profiler:
            profiler.disable()
        cpu = time.process_time() - cpu0
        print(f"worker {name:14} {len(jobs):6} writes  {cpu / len(jobs) * 1e6:7.0f} us CPU/write  "
              f"{(time.perf_counter() - wall0) / len(jobs) * 1e6:7.0f} us wall/write  "
              f"{statements[0] / len(jobs):5.2f} statements/write (commits included)")
        if profiler:
            _print_stats(profiler, top)
    engine.dispose()


def _command_counts(redis) -> collections.Counter:
    """Redis commands run so far, by name, from ``INFO commandstats`` (scripts' inner calls
    included, each EVAL counted as well)."""
    return collections.Counter({name.removeprefix("cmdstat_"): stats["calls"]
                                for name, stats in redis.info("commandstats").items()})


@contextlib.contextmanager
def _client_traffic():
    """Counts what this process's Redis clients do: round trips (a pipeline is one) and
    replies parsed (a pipeline's MULTI/QUEUED/EXEC included)."""
    from redis.connection import AbstractConnection

    counts = collections.Counter()
    send, read = AbstractConnection.send_packed_command, AbstractConnection.read_response

    def counted_send(self, *args, **kwargs):
        counts["round trips"] += 1
        return send(self, *args, **kwargs)

    def counted_read(self, *args, **kwargs):
        counts["replies"] += 1
        return read(self, *args, **kwargs)

    AbstractConnection.send_packed_command, AbstractConnection.read_response = counted_send, counted_read
    try:
        yield counts
    finally:
        AbstractConnection.send_packed_command, AbstractConnection.read_response = send, read


def profile_rq(database_url: str, users: int, batch: int, top: int, only: str | None,
               commands: bool = False) -> None:
    """The worker as it runs in the stack: batches enqueued on a private Redis by the front's
    ``Bus``, then drained by one ``ScimWorker`` (RQ's bookkeeping, the result stream) in burst
    mode, in this process. Also counts the Redis commands the worker sends per job (the
    private Redis's ``INFO commandstats``; ``--commands``: by name)."""
    from redis import Redis
    from rq import Queue

    from libs.bus.queues import Bus
    from libs.bus.serializer import OrjsonSerializer
    from libs.config import load_settings
    from libs.store.directory import DirectoryStore
    from libs.store.migrate import upgrade
    from libs.store.session import create_engine_from_url
    from libs.bus.rq_adapter import ScimWorker
    from services.worker import context
    from tests.support.servers import RedisServer

    upgrade(database_url)
    redis_server = RedisServer()
    redis_server.start()
    try:
        redis = Redis.from_url(redis_server.url)
        engine = create_engine_from_url(database_url, pool_size=2, ping=False)
        context._context = context.WorkerContext(load_settings(), DirectoryStore(engine))
        context._pid = os.getpid()
        bus = Bus(redis, "profile-writes", job_timeout=60)
        queue = Queue("profile-writes", connection=redis, serializer=OrjsonSerializer)
        for name, jobs in worker_phases(users).items():
            for start in range(0, len(jobs), batch):
                bus.submit_batch(uuid.uuid4().hex, jobs[start:start + batch])
            worker = ScimWorker([queue], connection=redis)
            profiler = cProfile.Profile(time.process_time) if top and (only is None or only == name) else None
            before = _command_counts(redis)
            with _client_traffic() as traffic:
                cpu0 = time.process_time()
                if profiler:
                    profiler.enable()
                worker.work(burst=True, logging_level="WARNING")
                if profiler:
                    profiler.disable()
                cpu = time.process_time() - cpu0
            used = _command_counts(redis) - before
            used["info"] -= 1  # the second count's own INFO
            used = +used
            runs = -(-len(jobs) // batch)
            print(f"rq worker {name:14} {len(jobs):6} writes  {cpu / len(jobs) * 1e6:7.0f} us CPU/write "
                  f"{sum(used.values()) / runs:5.1f} Redis commands/job (in scripts included) "
                  f"{traffic['replies'] / runs:5.1f} replies/job {traffic['round trips'] / runs:5.1f} round trips/job "
                  f"(batches of {batch})")
            if commands:
                print("    " + ", ".join(f"{cmd} {n / runs:.2f}" for cmd, n in used.most_common()))
            if profiler:
                _print_stats(profiler, top)
        engine.dispose()
    finally:
        redis_server.close()


def profile_front(requests: int, top: int) -> None:
    """The front's PATCH path through Flask's WSGI app with a bus that answers at once."""
    from libs.bus.messages import WriteResult
    from werkzeug.test import EnvironBuilder

    from services.front.app import create_app

    app = create_app()

    class EchoBus:
        def apply(self, job, timeout):
            return WriteResult(204, None, 2)

    app.extensions["scim.bus"] = EchoBus()
    token = os.environ["SCIM_TOKEN"]
    body = _patch({"op": "Replace", "path": "name.familyName", "value": "Leenay-x"})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    # The WSGI app called as gunicorn calls it, with an environ built once: the test client's
    # own request building would cost as much as the app.
    environ = EnvironBuilder(path=f"/scim/Users/{uuid.uuid4()}", method="PATCH", json=body,
                             headers=headers).get_environ()
    raw = environ["wsgi.input"].read()
    statuses: list[str] = []

    def start_response(status, _headers, _exc_info=None):
        statuses.append(status)

    def one() -> None:
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(raw)
        for _ in app(env, start_response):
            pass

    for _ in range(50):
        one()
    profiler = cProfile.Profile(time.process_time) if top else None
    cpu0 = time.process_time()
    if profiler:
        profiler.enable()
    for _ in range(requests):
        one()
    if profiler:
        profiler.disable()
    cpu = time.process_time() - cpu0
    print(f"front PATCH {requests} requests (the WSGI app, no HTTP server): {cpu / requests * 1e6:.0f} us "
          f"CPU/request (last status {statuses[-1]})")
    if profiler:
        _print_stats(profiler, top)


def _print_stats(profiler: cProfile.Profile, top: int) -> None:
    for key in ("cumulative", "tottime"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(key).print_stats(top)
        text = out.getvalue()
        print(text[text.find("   ncalls"):].rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile_writes", description=__doc__.splitlines()[0])
    p.add_argument("--role", choices=("worker", "rq", "front", "both"), default="both",
                   help="worker: apply_batch alone; rq: the worker with RQ and Redis; front; both: worker and front")
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--batch", type=int, default=5, help="writes per bus job (default %(default)s)")
    p.add_argument("--requests", type=int, default=3000, help="front PATCHes (default %(default)s)")
    p.add_argument("--top", type=int, default=0, help="print cProfile's top N functions (0: none)")
    p.add_argument("--only", help="with --top: profile only this worker phase")
    p.add_argument("--commands", action="store_true", help="rq: the Redis commands per job, by name")
    p.add_argument("--database-url", help="default: a private PostgreSQL for the run")
    args = p.parse_args(argv)
    with contextlib.ExitStack() as stack:
        var = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scimbus-profile-")))
        os.environ.setdefault("SCIM_VAR_DIR", str(var))
        os.environ.setdefault("SCIM_TOKEN", "profile-token")
        os.environ.setdefault("SCIM_LOG_LEVEL", "WARNING")
        url = args.database_url
        if url is None and args.role != "front":
            from tests.support.servers import postgres_server

            url = stack.enter_context(postgres_server())
        if url is None:  # the front reads its credentials from the store
            from libs.store.migrate import upgrade

            url = f"sqlite:///{var / 'front.db'}"
            upgrade(url)
        os.environ["SCIM_DATABASE_URL"] = url
        if args.role == "rq":
            profile_rq(url, args.users, args.batch, args.top, args.only, args.commands)
        if args.role in ("worker", "both"):
            profile_worker(url, args.users, args.batch, args.top, args.only)
        if args.role in ("front", "both"):
            profile_front(args.requests, args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
