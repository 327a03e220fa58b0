"""What one ``userName eq`` GET costs the reader, in CPU: ``python -m bench.reads``.

On a shared 2-core machine rates and latencies move with the neighbours' load; CPU time
per request does not (much). This starts a stack (``tests.support.stack``) on a private
PostgreSQL (or ``--database-url``), seeds ``--users`` users straight into the store
(``bench.seed``), then sends ``--reads`` filtered GETs on existing userNames from
``--concurrency`` threads and prints, per request: the reader's gunicorn processes' CPU
(each worker's share too, to see how the load spreads), the gateway's (nginx), PostgreSQL's CPU (the private
cluster's processes, backends that came and went included; not measured with
``--database-url``), the client's CPU, and the rate and latencies seen.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.load import make_clients, percentile
from bench.procs import _TICK, _cmdline, _stat, descendants, role_of


def _cpu(pids: list[int]) -> dict[int, float]:
    return {p: st[2] for p in pids if (st := _stat(p)) is not None}


def cluster_cpu(root: int) -> float:
    """CPU seconds of a PostgreSQL cluster so far: the postmaster's own and its reaped
    children's (``cutime``/``cstime``: backends that came and went) plus the live backends'."""
    try:
        raw = Path(f"/proc/{root}/stat").read_text()
    except OSError:
        return 0.0
    f = raw[raw.rindex(")") + 2:].split()
    own = sum(int(x) for x in f[11:15]) / _TICK
    return own + sum(_cpu([p for p, _ in descendants(root)]).values())


def reader_pids(root: int) -> list[int]:
    """The reader's gunicorn processes under ``scimbus run`` (the arbiter and its workers)."""
    return [pid for pid, _ in descendants(root) if role_of(_cmdline(pid)) == "reader"
            and "gunicorn" in " ".join(_cmdline(pid))]


def gateway_pids(root: int) -> list[int]:
    return [pid for pid, _ in descendants(root) if role_of(_cmdline(pid)) == "gateway"]


def drive(url: str, token: str, names: list[str], reads: int, concurrency: int) -> tuple[list[float], int, float]:
    """(latencies s, errors, wall s) of ``reads`` GETs spread over ``concurrency`` threads."""
    clients = make_clients(url, token, concurrency, 30)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per = [reads // concurrency + (1 if i < reads % concurrency else 0) for i in range(concurrency)]

    def work(i: int) -> None:
        rnd = random.Random(i)
        mine, bad = [], 0
        for _ in range(per[i]):
            name = rnd.choice(names)
            t = time.perf_counter()
            r = clients[i].get("/Users", params={"filter": f'userName eq "{name}"'})
            mine.append(time.perf_counter() - t)
            if r.status_code != 200 or r.json().get("totalResults") != 1:
                bad += 1
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    for c in clients:  # open every connection before measuring
        c.get("/Users", params={"filter": 'userName eq "warm-up"'})
    threads = [threading.Thread(target=work, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    for c in clients:
        c.close()
    return sorted(latencies), errors[0], wall


def measure(args: argparse.Namespace, database_url: str, pg_root: int | None) -> None:
    from bench.seed import seed_users, user_name
    from libs.store.session import create_engine_from_url
    from tests.support.stack import running_stack

    with tempfile.TemporaryDirectory(prefix="scimbus-reads-") as tmp, \
            running_stack(Path(tmp), database_url=database_url, extra_env=dict(args.env)) as stack:
        engine = create_engine_from_url(database_url)
        started = time.perf_counter()
        seed_users(engine, args.users)
        engine.dispose()
        print(f"seeded {args.users} users in {time.perf_counter() - started:.1f} s", flush=True)
        names = [user_name(i) for i in range(args.users)]
        readers, gateway = reader_pids(stack.proc.pid), gateway_pids(stack.proc.pid)
        drive(stack.url, stack.token, names, min(args.reads, 500), args.concurrency)  # warm every worker
        print(f"reader processes {readers}", flush=True)
        for run in range(args.repeat):
            r0, p0, c0, g0 = _cpu(readers), cluster_cpu(pg_root) if pg_root else 0.0, time.process_time(), _cpu(gateway)
            latencies, errors, wall = drive(stack.url, stack.token, names, args.reads, args.concurrency)
            r1, p1, c1, g1 = _cpu(readers), cluster_cpu(pg_root) if pg_root else 0.0, time.process_time(), _cpu(gateway)
            n = len(latencies)
            per_proc = sorted(((r1[p] - r0[p]) * 1000 / n for p in r1 if p in r0), reverse=True)
            pg_ms = (p1 - p0) * 1000 / n
            gateway_ms = sum(g1[p] - g0[p] for p in g1 if p in g0) * 1000 / n
            print(f"run {run + 1}: {n} GETs, {errors} errors, {n / wall:.0f}/s, "
                  f"p50 {percentile(latencies, 50) * 1000:.1f} ms, p99 {percentile(latencies, 99) * 1000:.1f} ms | "
                  f"reader CPU {sum(per_proc):.2f} ms/GET (per process {' '.join(f'{c:.2f}' for c in per_proc)}) | "
                  f"PostgreSQL {pg_ms:.2f} ms/GET | gateway {gateway_ms:.2f} ms/GET | client {(c1 - c0) * 1000 / n:.2f} ms/GET", flush=True)


def _env_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.startswith("SCIM_"):
        raise argparse.ArgumentTypeError("expected SCIM_NAME=value")
    return key, value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reads", description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--reads", type=int, default=4000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--database-url", help="an empty PostgreSQL/SQLite database (default: a private PostgreSQL)")
    p.add_argument("--env", type=_env_pair, action="append", default=[],
                   help="SCIM_NAME=value for the stack (e.g. SCIM_HTTP_WORKERS=1), repeatable")
    args = p.parse_args(argv)
    with contextlib.ExitStack() as resources:
        if args.database_url:
            measure(args, args.database_url, None)
            return 0
        from tests.support.servers import PostgresServer

        server = PostgresServer(durable=True)
        server.start()
        resources.callback(server.close)
        measure(args, server.url, server.proc.pid if server.proc else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
