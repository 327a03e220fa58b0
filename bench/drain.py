"""Worker scaling on a drained queue: ``python -m bench.drain --writes 20000 [--postgres]``.

Issue 7's target: a queue holding N writes is drained by 2 worker processes at ≥ 1.7×
the rate of 1. The queue is filled while no worker runs (bus jobs of ``--batch`` writes,
exactly what the front enqueues), then a real ``scimbus worker --processes K`` pool is
started and timed until every job has a result. Each run gets a fresh database and Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from redis import Redis  # noqa: E402
from rq import Queue, Worker  # noqa: E402
from rq.suspension import resume, suspend  # noqa: E402

from libs.bus import defaults  # noqa: E402
from libs.bus.messages import WriteJob  # noqa: E402
from libs.bus.serializer import OrjsonSerializer  # noqa: E402
from libs.store.migrate import upgrade  # noqa: E402
from tests.support.servers import RedisServer, postgres_server  # noqa: E402

QUEUE = "scim-writes"


def _user(i: int) -> dict:
    name = f"drain-{uuid.uuid4().hex[:12]}-{i}@contoso.com"
    return {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name, "active": True,
            "externalId": str(uuid.uuid4()), "emails": [{"type": "work", "value": name, "primary": True}],
            "name": {"givenName": "Drain", "familyName": str(i)}}


def fill(redis: Redis, writes: int, batch: int) -> list[str]:
    queue = Queue(QUEUE, connection=redis, serializer=OrjsonSerializer)
    ids = []
    for start in range(0, writes, batch):
        jobs = [WriteJob(job_id=uuid.uuid4().hex, op="create", app="default", resource_type="User",
                         resource_id=str(uuid.uuid4()), body=_user(i)).to_payload()
                for i in range(start, min(writes, start + batch))]
        job = queue.enqueue(defaults.JOB_FUNCTION, {"writes": jobs}, result_ttl=3600, job_timeout=60)
        ids.append(job.id)
    return ids


def drain(processes: int, writes: int, batch: int, database_url: str) -> float:
    with tempfile.TemporaryDirectory(prefix="scimbus-drain-") as tmp:
        redis_server = RedisServer(Path(tmp) / "redis")
        redis_server.start()
        try:
            upgrade(database_url)
            redis = Redis.from_url(redis_server.url)
            suspend(redis)  # the pool starts and warms up, but takes no job before the clock starts
            env = {**os.environ, "SCIM_REDIS_URL": redis_server.url, "SCIM_DATABASE_URL": database_url,
                   "SCIM_VAR_DIR": tmp, "SCIM_TOKEN": "drain", "SCIM_LOG_LEVEL": "WARNING"}
            pool = subprocess.Popen([sys.executable, "-m", "services.cli", "worker", "--processes", str(processes),
                                     "--metrics-port", "0"], cwd=ROOT, env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                job_ids = fill(redis, writes, batch)
                while len(Worker.all(connection=redis)) < processes:
                    time.sleep(0.1)
                time.sleep(1.0)
                resume(redis)
                started = time.perf_counter()
                while redis.llen(f"rq:queue:{QUEUE}") or redis.zcard(f"rq:wip:{QUEUE}"):
                    time.sleep(0.05)
                elapsed = time.perf_counter() - started
            finally:
                pool.terminate()
                pool.wait(30)
            finished = sum(1 for j in job_ids if redis.exists(f"rq:results:{j}"))
            if finished != len(job_ids):
                raise SystemExit(f"only {finished} of {len(job_ids)} jobs have results")
            return writes / elapsed
        finally:
            redis_server.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.drain", description=__doc__.splitlines()[0])
    p.add_argument("--writes", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=1, help="writes per bus job (the front sends 1 to 64)")
    p.add_argument("--postgres", action="store_true", help="PostgreSQL as the store (default: SQLite)")
    args = p.parse_args(argv)
    rates = {}
    for processes in (1, 2):
        with contextlib.ExitStack() as stack:
            if args.postgres:
                url = stack.enter_context(postgres_server())
            else:
                url = f"sqlite:///{stack.enter_context(tempfile.TemporaryDirectory())}/drain.db"
            rates[processes] = drain(processes, args.writes, args.batch, url)
            print(f"{processes} worker process{'es' if processes > 1 else ''}: {rates[processes]:7.0f} writes/s "
                  f"({args.writes} writes, {args.batch} per job, {'PostgreSQL' if args.postgres else 'SQLite'})",
                  flush=True)
    ratio = rates[2] / rates[1]
    print(f"2 workers / 1 worker = {ratio:.2f}x  (target >= 1.7x: {'PASS' if ratio >= 1.7 else 'FAIL'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
