"""``python -m bench.churn``: a fixed directory driven through many writes; does anything grow?

Entra syncs for years; what every write leaves behind (idempotency records, the outbox
and audit rows, the delivery ledger, RQ's job hashes and results) must level off, not grow
with the count of writes. The bench starts a stack (``tests.support.stack``), creates a
directory of ``--directory`` users, then keeps it at that size through ``--writes`` writes:
per slot of the directory, eight PATCHes, then a DELETE and a POST of its successor
(the slots staggered, so the directory stays within a tenth of its size). Every
``--every`` writes it prints the database's size on disk, Redis's memory and the row count
of each table that grows with writes.

The retention windows are settings: ``--change-retention`` (SCIM_CHANGE_RETENTION, with
SCIM_AUDIT_RETENTION_DAYS=0) shortens the changes' window so the leveling shows within a
run; ``applied_writes`` keeps its window, the bus job's life (libs/store/retention.py), so
it levels off only once a run is longer than that.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests.support.stack starts the stack
    sys.path.insert(0, str(ROOT))

from bench.client import Client, HTTPError  # noqa: E402
from bench.seed import user_body  # noqa: E402

TABLES = ("resources", "resource_values", "applied_writes", "changes", "rejected_writes", "delivery_state",
          "delivery_log", "dead_letters")
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
CYCLE = 10
"""Writes per slot cycle: 8 PATCHes, a DELETE, a POST."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Churn:
    """The writers: thread ``t`` owns the slots ``t, t + concurrency, …`` (no two writers
    touch one user), and the shared count of writes done."""

    def __init__(self, url: str, token: str, directory: int, concurrency: int, timeout: float) -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json",
                   "Accept": "application/scim+json"}
        self.clients = [Client(url, headers, timeout) for _ in range(concurrency)]
        self.directory = directory
        self.slots: list[str | None] = [None] * directory
        self.names = iter(range(10**9))
        self.lock = threading.Lock()
        self.done = 0
        self.errors: dict[str, int] = {}
        self.stop = threading.Event()

    def _count(self, ok: bool, what: str) -> None:
        with self.lock:
            self.done += 1
            if not ok:
                self.errors[what] = self.errors.get(what, 0) + 1

    def _create(self, client: Client, slot: int) -> None:
        with self.lock:
            n = next(self.names)
        try:
            answer = client.request("POST", "/Users", json=user_body(n))
            ok = answer.status_code == 201
            if ok:
                self.slots[slot] = answer.json()["id"]
        except (HTTPError, ValueError):
            ok = False
            answer = None
        self._count(ok, f"POST {answer.status_code if answer else 'no answer'}")

    def fill(self) -> None:
        self._run(lambda client, slot, step: self._create(client, slot), steps=1)
        self.done = 0

    def _write(self, client: Client, slot: int, step: int) -> None:
        """Step ``step`` of a slot: its successor's POST right after a DELETE (or a failed POST),
        the DELETE at one step of ten, PATCHes at the others. The slots are staggered, so a
        tenth of the directory is between its DELETE and POST at any moment."""
        user = self.slots[slot]
        if user is None:
            return self._create(client, slot)
        try:
            if (step + slot) % CYCLE == CYCLE - 2:
                answer = client.request("DELETE", f"/Users/{user}")
                ok, what = answer.status_code == 204, f"DELETE {answer.status_code}"
                self.slots[slot] = None
            else:
                answer = client.request("PATCH", f"/Users/{user}", json={"schemas": [PATCH], "Operations": [
                    {"op": "replace", "path": "title", "value": f"title {step}"},
                    {"op": "replace", "path": "active", "value": step % 2 == 0}]})
                ok, what = answer.status_code in (200, 204), f"PATCH {answer.status_code}"
        except HTTPError as exc:
            ok, what = False, f"no answer ({exc})"[:60]
        self._count(ok, what)

    def run(self, writes: int) -> None:
        self._run(self._write, steps=None, writes=writes)

    def _run(self, fn, *, steps: int | None, writes: int | None = None) -> None:
        n = len(self.clients)

        def loop(t: int) -> None:
            mine = range(t, self.directory, n)
            step = 0
            while not self.stop.is_set() and (steps is None or step < steps):
                for slot in mine:
                    if writes is not None and self.done >= writes:
                        return
                    fn(self.clients[t], slot, step)
                step += 1

        threads = [threading.Thread(target=loop, args=(t,), daemon=True) for t in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


class Sink:
    """A web hook target that takes every event and keeps only their count (``--hook``)."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        sink = self
        self.received = 0

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                sink.received += 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def config(self, path: Path) -> Path:
        path.write_text(f'''[connectors.hook]
type = "webhook"
url = "http://127.0.0.1:{self.server.server_port}/events"
secret = "churn-hook-secret-{"x" * 16}"
timeout = 5
[connectors.hook.users]
''')
        return path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def measure(engine, var_dir: Path, redis) -> dict:
    """Database bytes on disk, Redis's used memory and the row count of each table."""
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}
        if engine.dialect.name == "postgresql":
            size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
        else:
            size = sum(p.stat().st_size for p in var_dir.glob("scimbus.db*"))
    return {"db_bytes": int(size), "redis_bytes": int(redis.info("memory")["used_memory"]), "rows": rows}


def _line(writes: int, seconds: float, m: dict) -> str:
    rows = " ".join(f"{t}={m['rows'][t]}" for t in TABLES)
    return (f"writes={writes:>9} t={seconds:7.0f}s db={m['db_bytes'] / 2**20:8.1f}MB "
            f"redis={m['redis_bytes'] / 2**20:6.1f}MB {rows}")


def run(args: argparse.Namespace) -> dict:
    from libs.config import load_settings
    from libs.store.session import create_engine_from_url
    from tests.support.stack import running_stack

    env = {"SCIM_CHANGE_RETENTION": args.change_retention, "SCIM_AUDIT_RETENTION_DAYS": "0",
           "SCIM_RETENTION_INTERVAL": str(args.retention_interval), "SCIM_SWEEP_INTERVAL": "2",
           **dict(item.split("=", 1) for item in args.stack_env)}
    tmp = Path(tempfile.mkdtemp(prefix="scimbus-churn-"))
    points: list[dict] = []
    sink = Sink() if args.hook else None
    if sink is not None:  # a connector: the delivery ledger grows with writes too
        env["SCIM_CONFIG_FILE"] = str(sink.config(tmp.parent / f"{tmp.name}-hook.toml"))
    try:
        with running_stack(tmp, database_url=args.database_url, workers=args.workers, extra_env=env) as stack:
            engine = create_engine_from_url(load_settings(stack.env).database)
            redis = stack.redis()
            churn = Churn(stack.url, stack.token, args.directory, args.concurrency, args.timeout)
            _log(f"churn: creating a directory of {args.directory} users ...")
            churn.fill()
            started = time.monotonic()
            first = measure(engine, tmp, redis)
            points.append({"writes": 0, "seconds": 0.0, **first})
            print(_line(0, 0.0, first), flush=True)
            writer = threading.Thread(target=churn.run, args=(args.writes,), daemon=True)
            writer.start()
            mark = args.every
            while writer.is_alive() or mark <= churn.done:
                writer.join(timeout=0.5)
                if churn.done >= mark or not writer.is_alive():
                    at = churn.done
                    point = measure(engine, tmp, redis)
                    seconds = time.monotonic() - started
                    points.append({"writes": at, "seconds": round(seconds, 1), **point})
                    print(_line(at, seconds, point), flush=True)
                    if not writer.is_alive():
                        break
                    mark = (at // args.every + 1) * args.every
            churn.stop.set()
            engine.dispose()
            return {"points": points, "errors": churn.errors, "writes": churn.done,
                    "hook_events": sink.received if sink else None,
                    "store": "PostgreSQL" if args.database_url else "SQLite",
                    "settings": {k: v for k, v in env.items()}}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if sink is not None:
            sink.close()
            Path(env["SCIM_CONFIG_FILE"]).unlink(missing_ok=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.churn", description=__doc__.splitlines()[0])
    p.add_argument("--writes", type=int, default=1_000_000)
    p.add_argument("--every", type=int, default=100_000, help="print a line every N writes")
    p.add_argument("--directory", type=int, default=1000, help="users the directory holds throughout")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--change-retention", default="5m", help="SCIM_CHANGE_RETENTION of the run")
    p.add_argument("--retention-interval", type=float, default=30.0, help="SCIM_RETENTION_INTERVAL of the run")
    p.add_argument("--hook", action="store_true", help="a web hook connector receives every user change")
    p.add_argument("--database-url", help="the store (default: SQLite in the stack's folder)")
    p.add_argument("--postgres", action="store_true", help="run a private PostgreSQL and use it")
    p.add_argument("--stack-env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--json", help="write the points here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # A stopped run stops its stack too (the context managers' exits run on SystemExit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.ExitStack() as resources:
        if args.postgres:
            from tests.support.servers import postgres_server

            args.database_url = resources.enter_context(postgres_server())
        result = run(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    total = result["writes"]
    failed = sum(result["errors"].values())
    print(f"churn: {total} writes, {failed} failed {result['errors'] or ''}", flush=True)
    return 1 if failed > max(1, total // 1000) else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
