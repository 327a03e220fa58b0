"""The reader's memory while a client pages through the whole directory: ``python -m bench.paging``.

Issue 7: "the reader's memory stays flat while paging 1,000,000 users". The directory is
seeded straight into the store (``bench.seed``: rows exactly as the worker writes them,
minutes instead of hours through HTTP), then a stack is started on it and one client reads
every user with cursor paging (RFC 9865), after the first ``--start-index-pages`` pages
with ``startIndex`` as well (they must list the same users in the same order). The reader's
gunicorn processes are sampled (RSS, PSS) at the start and after 10 %, 50 % and 100 % of
the users; memory is flat when the largest reader worker grew less than ``--max-growth-mb``
after the first 10 %.

Exit status: 0 when every user was listed exactly once and memory stayed flat, 1 otherwise,
2 when the stack or the database did not start.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.procs import _pss_bytes, _rss_bytes

CHECKPOINTS = (0.1, 0.5, 1.0)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def reader_memory(root: int) -> tuple[float, float, list[float]]:
    """(RSS, PSS, RSS of each process) in MB of the reader's gunicorn processes (arbiter and
    workers) under ``scimbus run`` ``root``."""
    from bench.reads import reader_pids

    each = [_rss_bytes(p) / 2**20 for p in reader_pids(root)]
    return sum(each), sum(_pss_bytes(p) for p in reader_pids(root)) / 2**20, each


@dataclass
class Traversal:
    """What one pass over the directory saw."""

    users: int
    seen: bytearray = field(init=False)
    listed: int = 0
    duplicates: int = 0
    strangers: int = 0
    pages: int = 0
    totals: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.seen = bytearray(self.users)

    def add(self, user_name: str) -> None:
        from bench.seed import number_of

        i = number_of(user_name)
        if i is None or i >= self.users:
            self.strangers += 1
        elif self.seen[i]:
            self.duplicates += 1
        else:
            self.seen[i] = 1
            self.listed += 1

    @property
    def exact(self) -> bool:
        return self.listed == self.users and not self.duplicates and not self.strangers


def _page(client: httpx.Client, params: dict) -> dict:
    r = client.get("/Users", params=params)
    if r.status_code != 200:
        raise RuntimeError(f"GET /Users {params} answered {r.status_code}: {r.text[:300]}")
    return r.json()


def start_index_pages(client: httpx.Client, pages: int, count: int) -> list[list[str]]:
    return [[u["userName"] for u in _page(client, {"startIndex": 1 + p * count, "count": count})["Resources"]]
            for p in range(pages)]


def traverse(client: httpx.Client, users: int, count: int, on_progress) -> tuple[Traversal, list[list[str]]]:
    """Every page of ``GET /Users?cursor`` to the end; also the first pages' userNames."""
    seen = Traversal(users)
    first_pages: list[list[str]] = []
    cursor = ""
    while True:
        body = _page(client, {"cursor": cursor, "count": count})
        names = [u["userName"] for u in body["Resources"]]
        if len(first_pages) < 50:
            first_pages.append(names)
        for name in names:
            seen.add(name)
        seen.pages += 1
        seen.totals.add(body["totalResults"])
        on_progress(seen)
        cursor = body.get("nextCursor")
        if not cursor:
            return seen, first_pages


def run(args: argparse.Namespace, database_url: str) -> int:
    from bench.procs import StackSampler
    from bench.seed import seed_users
    from libs.store.migrate import upgrade
    from libs.store.session import create_engine_from_url
    from tests.support.stack import running_stack

    upgrade(database_url)
    engine = create_engine_from_url(database_url)
    started = time.perf_counter()
    shown = [0]

    def seeded(n: int) -> None:
        if n - shown[0] >= args.users // 10 or n == args.users:
            shown[0] = n
            _log(f"paging: seeded {n} users, {time.perf_counter() - started:.0f} s")

    seed_users(engine, args.users, progress=seeded)
    engine.dispose()
    _log(f"paging: seeded {args.users} users in {time.perf_counter() - started:.1f} s")
    with tempfile.TemporaryDirectory(prefix="scimbus-paging-") as tmp, \
            running_stack(Path(tmp), database_url=database_url) as stack:
        sampler = StackSampler(stack.proc.pid, interval=1.0).start()
        memory: list[tuple[str, float, float, list[float]]] = [("start", *reader_memory(stack.proc.pid))]
        marks = [(int(args.users * f), f"after {f:.0%}") for f in CHECKPOINTS]
        started = time.perf_counter()

        def progress(seen: Traversal) -> None:
            while marks and seen.listed >= marks[0][0]:
                memory.append((marks.pop(0)[1], *reader_memory(stack.proc.pid)))
                _log(f"paging: {seen.listed} users in {seen.pages} pages, {time.perf_counter() - started:.0f} s, "
                     f"reader RSS {memory[-1][1]:.1f} MB")

        with stack.client() as client:
            by_index = start_index_pages(client, args.start_index_pages, args.count)
            seen, by_cursor = traverse(client, args.users, args.count, progress)
        wall = time.perf_counter() - started
        usage = sampler.stop().get("reader")
    return report(args, seen, by_index, by_cursor, memory, usage, wall)


def growth_mb(memory: list[tuple[str, float, float, list[float]]]) -> float:
    """Growth of the RSS of the reader's largest worker (the arbiter, listed first, left out)
    from the 10 % mark to the end.

    One client on one keep-alive connection is served by one worker at a time: a worker may
    take its first page only after the 10 % mark, and its warm-up (~10 MB) is no leak. It
    only brings it to the others' level, while a leak in any worker lifts the largest."""
    def largest(label: str) -> float:
        each = next((e for name, _, _, e in memory if name == label), [])
        return max(each[1:], default=0.0)

    return largest("after 100%") - largest("after 10%")


def report(args: argparse.Namespace, seen: Traversal, by_index: list[list[str]], by_cursor: list[list[str]],
           memory: list[tuple[str, float, float, list[float]]], usage, wall: float) -> int:
    same_order = by_index == by_cursor[:len(by_index)]
    print(f"paged {seen.users} users: {seen.pages} cursor pages of {args.count} in {wall:.1f} s "
          f"({seen.users / wall:.0f} users/s); listed {seen.listed}, duplicates {seen.duplicates}, "
          f"others {seen.strangers}, totalResults {sorted(seen.totals)}")
    print(f"first {len(by_index)} startIndex pages {'match' if same_order else 'DIFFER FROM'} the cursor pages")
    print("reader memory (gunicorn arbiter + workers):")
    for label, rss, pss, each in memory:
        print(f"  {label:<11} RSS {rss:7.1f} MB  PSS {pss:7.1f} MB  (per process {' '.join(f'{m:.1f}' for m in each)})")
    if usage is not None:
        print(f"  peak        RSS {usage.rss_peak:7.1f} MB  PSS {usage.pss_peak:7.1f} MB (sampled every second)")
    growth = growth_mb(memory)
    flat = growth < args.max_growth_mb
    print(f"memory {'flat' if flat else 'NOT flat'}: {growth:+.1f} MB RSS of the largest reader worker from 10% "
          f"to 100% (limit {args.max_growth_mb:.0f} MB)")
    return 0 if seen.exact and same_order and flat else 1


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.paging", description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--count", type=int, default=1000, help="users per page (the reader caps it at SCIM_MAX_RESULTS)")
    p.add_argument("--start-index-pages", type=int, default=10)
    p.add_argument("--max-growth-mb", type=float, default=10.0)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--postgres", action="store_true", help="a private PostgreSQL for the run")
    g.add_argument("--database-url", help="an empty database (default: SQLite in a temporary folder)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with contextlib.ExitStack() as resources:
        url = args.database_url
        if args.postgres:
            from tests.support.servers import postgres_server

            try:
                url = resources.enter_context(postgres_server())
            except (RuntimeError, OSError) as exc:
                _log(f"paging: PostgreSQL did not start: {exc}")
                return 2
        if url is None:
            folder = Path(resources.enter_context(tempfile.TemporaryDirectory(prefix="scimbus-paging-db-")))
            url = f"sqlite:///{folder / 'scimbus.db'}"
        try:
            return run(args, url)
        except (RuntimeError, TimeoutError) as exc:
            _log(f"paging: {exc}")
            return 2


if __name__ == "__main__":
    sys.exit(main())
