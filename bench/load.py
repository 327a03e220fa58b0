"""An Entra-shaped load on a scimbus stack, with rates, latencies, errors and memory.

Count-based phases, each run by ``--concurrency`` threads, every thread with its own
persistent ``httpx.Client`` (keep-alive, kept across phases; no connection per request):

1. ``query-miss`` + ``create-user``: the matching query Entra sends before it creates
   (``GET /Users?filter=userName eq "<guid>@contoso.com"`` → empty ListResponse), then
   ``POST /Users`` with the tutorial's body.
2. ``query-hit``: ``GET /Users?filter=userName eq …`` on users created in phase 1.
3. ``patch-user-name`` + ``patch-user-disable``: ``Replace name.familyName``, then
   ``Replace active "False"`` (Entra's default PATCH dialect).
4. ``create-group``: ``POST /Groups``; then ``patch-group-add``: one
   ``{"op":"Add","path":"members","value":[{"value":id}]}`` PATCH per member, the adds
   of different groups interleaved (fewer groups than threads: concurrent adds to one group).
5. ``get-group``: ``GET /Groups/{id}``, checking that every member added is there.

A request counts as an error when it fails in transport, answers a status other than the
expected one, or answers a body that says something else than it should (a miss that
finds a user, a hit that finds none or another one, a disabled user still active, a group
missing a member that was added).
``ops/s`` of an operation is its count over the wall time of the phase it ran in.
Exit status: 0, or 1 when errors exceed ``--max-error-ratio`` (1 %), 2 when the stack
cannot be reached or started.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ADSCIM_GROUP = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

# (operation, phase) in report order
OPERATIONS = (
    ("query-miss", "1 query+create users"),
    ("create-user", "1 query+create users"),
    ("query-hit", "2 filtered GETs"),
    ("patch-user-name", "3 user PATCHes"),
    ("patch-user-disable", "3 user PATCHes"),
    ("create-group", "4a group creates"),
    ("patch-group-add", "4b member adds"),
    ("get-group", "5 verify members"),
)
ERROR_SAMPLES = 3


# --------------------------------------------------------------------------- request bodies


def user_body(user_name: str) -> dict:
    """The tutorial's Create User request (entra-scim.md §9)."""
    return {
        "schemas": [USER, ENTERPRISE],
        "externalId": str(uuid.uuid4()),
        "userName": user_name,
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Ryan Leenay", "familyName": "Leenay", "givenName": "Ryan"},
        "roles": [],
    }


def group_body(name: str) -> dict:
    """The tutorial's Create Group request, ADSCIM schema URI included."""
    return {"schemas": [GROUP, ADSCIM_GROUP], "externalId": str(uuid.uuid4()), "displayName": name,
            "meta": {"resourceType": "Group"}}


def patch_body(*operations: dict) -> dict:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}


# --------------------------------------------------------------------------- recording


@dataclass
class Recorder:
    """One thread's measurements (merged after the phase: no lock on the hot path)."""

    samples: list[tuple[str, float, bool]] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)

    def add(self, op: str, seconds: float, ok: bool, why: str | None = None) -> None:
        self.samples.append((op, seconds, ok))
        if not ok:
            kept = self.errors.setdefault(op, [])
            if len(kept) < ERROR_SAMPLES:
                kept.append(why or "?")


Check = Callable[[httpx.Response], "str | None"]


def call(client: httpx.Client, rec: Recorder, op: str, method: str, url: str, *, expect: Iterable[int],
         check: Check | None = None, **kw) -> httpx.Response | None:
    """One timed request; returns the response when it is what was expected, else None."""
    t0 = time.perf_counter()
    try:
        response = client.request(method, url, **kw)
    except httpx.HTTPError as exc:
        rec.add(op, time.perf_counter() - t0, False, f"{type(exc).__name__}: {exc}")
        return None
    seconds = time.perf_counter() - t0
    why = None
    if response.status_code not in expect:
        why = f"HTTP {response.status_code}: {response.text[:160]}"
    elif check is not None:
        try:
            why = check(response)
        except ValueError as exc:  # not JSON
            why = f"HTTP {response.status_code}, unreadable body ({exc}): {response.text[:120]}"
    rec.add(op, seconds, why is None, why)
    return response if why is None else None


def _list_check(expected_id: str | None) -> Check:
    """A ListResponse with no resource (``None``) or exactly the expected one."""
    def check(response: httpx.Response) -> str | None:
        body = response.json()
        found = [r.get("id") for r in body.get("Resources", [])]
        if expected_id is None:
            return None if body.get("totalResults") == 0 and not found else f"expected no match, got {found}"
        if body.get("totalResults") != 1 or found != [expected_id]:
            return f"expected [{expected_id}], got totalResults={body.get('totalResults')} {found}"
        return None
    return check


def _body_check(predicate: Callable[[dict], bool], what: str) -> Check:
    """For a 200 with a body; a 204 has nothing to check."""
    def check(response: httpx.Response) -> str | None:
        if response.status_code == 204 or not response.content:
            return None
        return None if predicate(response.json()) else f"{what}: {response.text[:160]}"
    return check


def _created(response: httpx.Response) -> str | None:
    return None if response.json().get("id") else f"no id in the 201: {response.text[:160]}"


# --------------------------------------------------------------------------- phases


@dataclass
class Phase:
    name: str
    wall: float
    recorders: list[Recorder]
    results: list


def run_phase(name: str, clients: list[httpx.Client], tasks: list, fn) -> Phase:
    """Run ``fn(client, recorder, task)`` over every task with one thread per client."""
    todo = deque(tasks)
    lock = threading.Lock()
    recorders = [Recorder() for _ in clients]
    results: list[list] = [[] for _ in clients]
    crashed: list[BaseException] = []
    start = threading.Barrier(len(clients) + 1)

    def worker(i: int) -> None:
        start.wait()
        while True:
            with lock:
                if not todo or crashed:
                    return
                task = todo.popleft()
            try:
                out = fn(clients[i], recorders[i], task)
            except Exception as exc:  # a bug of the bench, not an error of the stack: stop loudly
                crashed.append(exc)
                return
            if out is not None:
                results[i].append(out)

    threads = [threading.Thread(target=worker, args=(i,), name=f"bench-{i}", daemon=True)
               for i in range(len(clients))]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    if crashed:
        raise crashed[0]
    return Phase(name, time.perf_counter() - t0, recorders, [r for rs in results for r in rs])


def query_then_create(client: httpx.Client, rec: Recorder, user_name: str) -> tuple[str, str] | None:
    params = {"filter": f'userName eq "{user_name}"'}
    if call(client, rec, "query-miss", "GET", "/Users", params=params, expect=(200,),
            check=_list_check(None)) is None:
        return None  # Entra creates only after a query that answered "absent"
    response = call(client, rec, "create-user", "POST", "/Users", json=user_body(user_name), expect=(201,),
                    check=_created)
    return (response.json()["id"], user_name) if response is not None else None


def query_hit(client: httpx.Client, rec: Recorder, user: tuple[str, str]) -> None:
    user_id, user_name = user
    call(client, rec, "query-hit", "GET", "/Users", params={"filter": f'userName eq "{user_name}"'},
         expect=(200,), check=_list_check(user_id))


def patch_user(client: httpx.Client, rec: Recorder, user: tuple[str, str]) -> None:
    user_id = user[0]
    family = "Leenay-" + user_id[:8]
    call(client, rec, "patch-user-name", "PATCH", f"/Users/{user_id}",
         json=patch_body({"op": "Replace", "path": "name.familyName", "value": family}), expect=(200, 204),
         check=_body_check(lambda u: u.get("name", {}).get("familyName") == family, "familyName unchanged"))
    call(client, rec, "patch-user-disable", "PATCH", f"/Users/{user_id}",
         json=patch_body({"op": "Replace", "path": "active", "value": "False"}), expect=(200, 204),
         check=_body_check(lambda u: u.get("active") is False, "still active"))


def create_group(client: httpx.Client, rec: Recorder, task: tuple[str, list[str]]) -> tuple | None:
    name, member_ids = task
    response = call(client, rec, "create-group", "POST", "/Groups", json=group_body(name), expect=(201,),
                    check=_created)
    return (response.json()["id"], member_ids) if response is not None else None


def add_member(client: httpx.Client, rec: Recorder, task: tuple[str, str]) -> None:
    group_id, member = task
    call(client, rec, "patch-group-add", "PATCH", f"/Groups/{group_id}",
         json=patch_body({"op": "Add", "path": "members", "value": [{"value": member}]}), expect=(204, 200))


def get_group(client: httpx.Client, rec: Recorder, task: tuple[str, list[str]]) -> None:
    """Every member added in phase 4 is there: no add lost to a concurrent one."""
    group_id, member_ids = task

    def check(response: httpx.Response) -> str | None:
        have = {m.get("value") for m in response.json().get("members") or []}
        missing = [m for m in member_ids if m not in have]
        return f"{len(missing)} of {len(member_ids)} members missing, e.g. {missing[:2]}" if missing else None

    call(client, rec, "get-group", "GET", f"/Groups/{group_id}", expect=(200,), check=check)


# --------------------------------------------------------------------------- statistics


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarise(phases: list[Phase]) -> dict:
    ops: dict[str, dict] = {}
    errors: dict[str, list[str]] = {}
    walls = {p.name: p.wall for p in phases}
    for op, phase_name in OPERATIONS:
        lat = sorted(s for p in phases for r in p.recorders for (o, s, _ok) in r.samples if o == op)
        bad = sum(1 for p in phases for r in p.recorders for (o, _s, ok) in r.samples if o == op and not ok)
        wall = walls.get(phase_name, 0.0)
        ops[op] = {
            "phase": phase_name, "count": len(lat), "errors": bad,
            "ops_per_s": round(len(lat) / wall, 1) if wall > 0 else 0.0,
            "p50_ms": round(percentile(lat, 50) * 1000, 2), "p95_ms": round(percentile(lat, 95) * 1000, 2),
            "p99_ms": round(percentile(lat, 99) * 1000, 2),
            "max_ms": round((lat[-1] if lat else 0) * 1000, 2),
            "mean_ms": round(sum(lat) / len(lat) * 1000, 2) if lat else 0.0,
        }
        for p in phases:
            for r in p.recorders:
                errors.setdefault(op, []).extend(r.errors.get(op, []))
    total = sum(o["count"] for o in ops.values())
    bad = sum(o["errors"] for o in ops.values())
    return {
        "operations": ops,
        "phases": [{"name": p.name, "requests": sum(len(r.samples) for r in p.recorders),
                    "wall_s": round(p.wall, 3)} for p in phases],
        "requests": total, "errors": bad, "error_ratio": (bad / total) if total else 1.0,
        "error_samples": {op: msgs[:ERROR_SAMPLES] for op, msgs in errors.items() if msgs},
    }


# --------------------------------------------------------------------------- report


def _table(headers: list[str], rows: list[list], left: int = 1) -> list[str]:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    out = []
    for row in cells:
        out.append("  ".join(c.ljust(w) if i < left else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row, widths))))
    return out


def render(summary: dict, meta: dict, usage: dict | None) -> str:
    lines = [f"scimbus bench  {meta['url']}  ({meta['mode']})",
             f"users={meta['users']} reads={meta['reads']} groups={meta['groups']} "
             f"members/group={meta['members_per_group']} concurrency={meta['concurrency']}", ""]
    lines += _table(["phase", "requests", "wall s", "req/s"],
                    [[p["name"], p["requests"], f"{p['wall_s']:.2f}",
                      f"{p['requests'] / p['wall_s']:.1f}" if p["wall_s"] else "-"]
                     for p in summary["phases"]])
    lines.append("")
    rows = [[op, o["count"], f"{o['ops_per_s']:.1f}", f"{o['p50_ms']:.1f}", f"{o['p95_ms']:.1f}",
             f"{o['p99_ms']:.1f}", f"{o['max_ms']:.1f}", o["errors"]]
            if o["count"] else [op, 0, *"------"]
            for op, o in summary["operations"].items()]
    rows.append(["total", summary["requests"], "", "", "", "", "",
                 f"{summary['errors']} ({summary['error_ratio'] * 100:.2f}%)"])
    lines += _table(["operation", "count", "ops/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "errors"], rows)
    lines.append(f"(ops/s: operations over the wall time of their phase; client CPU "
                 f"{meta['client_cpu_s']:.1f} s over {meta['wall_s']:.1f} s of load)")
    if usage:
        lines.append("")
        lines += _table(
            ["service", "procs", "RSS start MB", "RSS end MB", "RSS peak MB", "PSS end MB", "CPU s",
             "busiest procs CPU s"],
            [[role, u["procs"], f"{u['rss_start_mb']:.1f}", f"{u['rss_end_mb']:.1f}",
              f"{u['rss_peak_mb']:.1f}", f"{u['pss_end_mb']:.1f}", f"{sum(u['cpu_s_per_process']):.1f}",
              " ".join(f"{c:.1f}" for c in u["cpu_s_per_process"][:4]) or "-"]
             for role, u in usage.items()])
        lines.append("(RSS sums count the pages forked processes share once per process; PSS splits them)")
    if summary["error_samples"]:
        lines += ["", "errors (first of each operation):"]
        for op, msgs in summary["error_samples"].items():
            lines += [f"  {op}: {m}" for m in msgs]
    return "\n".join(lines)


# --------------------------------------------------------------------------- driver


def default_token() -> str | None:
    if os.environ.get("SCIM_TOKEN"):
        return os.environ["SCIM_TOKEN"].split(",")[0].strip()
    path = Path(os.environ.get("SCIM_VAR_DIR") or ROOT / "var") / "token"
    return path.read_text().strip() if path.exists() else None


def make_clients(url: str, token: str, n: int, timeout: float) -> list[httpx.Client]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json",
               "Accept": "application/scim+json"}
    return [httpx.Client(base_url=url, headers=headers, timeout=timeout,
                         limits=httpx.Limits(max_connections=1, max_keepalive_connections=1))
            for _ in range(n)]


def warm_up(clients: list[httpx.Client]) -> str | None:
    """Open every connection (Entra's Test Connection query); the reason when the stack says no."""
    for client in clients:
        try:
            r = client.get("/Users", params={"filter": f'userName eq "{uuid.uuid4()}"'})
        except httpx.HTTPError as exc:
            return f"cannot reach {client.base_url}: {type(exc).__name__}: {exc}"
        if r.status_code != 200:
            return f"GET {client.base_url}Users answered {r.status_code}: {r.text[:200]}"
    return None


def run_load(args: argparse.Namespace, url: str, token: str) -> tuple[dict, dict] | None:
    clients = make_clients(url, token, args.concurrency, args.timeout)
    try:
        if (problem := warm_up(clients)) is not None:
            print(f"bench: {problem}", file=sys.stderr)
            return None
        rng = random.Random(args.seed)
        run_id = uuid.uuid4().hex[:6]
        phases: list[Phase] = []
        cpu0, t0 = time.process_time(), time.perf_counter()

        def phase(name: str, tasks: list, fn) -> Phase:
            print(f"bench: phase {name}: {len(tasks)} tasks ...", file=sys.stderr, flush=True)
            p = run_phase(name, clients, tasks, fn)
            phases.append(p)
            return p

        users = phase(OPERATIONS[0][1], [f"{uuid.uuid4()}@contoso.com" for _ in range(args.users)],
                      query_then_create).results
        if not users:
            print("bench: no user was created; later phases skipped", file=sys.stderr)
        else:
            reads = [users[i % len(users)] for i in range(args.reads)]
            rng.shuffle(reads)
            phase(OPERATIONS[2][1], reads, query_hit)
            phase(OPERATIONS[3][1], list(users), patch_user)
            ids = [u[0] for u in users]
            per_group = min(args.members_per_group, len(ids))
            groups = [(f"bench-{run_id}-group-{g:05d}",
                       [ids[(g * per_group + j) % len(ids)] for j in range(per_group)])
                      for g in range(args.groups)]
            created = phase(OPERATIONS[5][1], groups, create_group).results
            # Entra adds members once the group exists; interleaved so that neighbours hit other groups
            phase(OPERATIONS[6][1], [(gid, members[j]) for j in range(per_group) for gid, members in created],
                  add_member)
            phase(OPERATIONS[7][1], created, get_group)
        meta = {"client_cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - t0}
        return summarise(phases), meta
    finally:
        for c in clients:
            c.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--url", help="base URL of a running stack, e.g. http://127.0.0.1:8585/scim "
                                 "(without it the bench starts its own stack)")
    p.add_argument("--token", help="bearer token (default: $SCIM_TOKEN, else var/token as in the local run)")
    p.add_argument("--start", action="store_true",
                   help="start a private stack for the run (the default without --url)")
    p.add_argument("--database-url",
                   help="with --start: the store's SQLAlchemy URL (default: SQLite in a temporary folder)")
    p.add_argument("--workers", type=int, default=2,
                   help="with --start: worker processes (default %(default)s)")
    p.add_argument("--stack-env", action="append", default=[], metavar="SCIM_X=V",
                   help="with --start: extra environment for the stack (repeatable)")
    p.add_argument("--stack-pid", type=int, help="with --url: PID of its `scimbus run`, to report memory")
    p.add_argument("--users", type=int, default=500, help="users queried then created (default %(default)s)")
    p.add_argument("--reads", type=int, help="filtered GETs on existing users (default: --users)")
    p.add_argument("--groups", type=int, help="groups created (default: users / 10, at least 1)")
    p.add_argument("--members-per-group", type=int, default=10,
                   help="member-add PATCHes per group (default %(default)s)")
    p.add_argument("--concurrency", type=int, default=8,
                   help="client threads, one connection each (default %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default %(default)s)")
    p.add_argument("--max-error-ratio", type=float, default=0.01,
                   help="exit 1 above this ratio of errors (default %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="seed of the read order (default %(default)s)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.url and args.start:
        p.error("--url and --start exclude each other")
    if args.users < 1 or args.concurrency < 1:
        p.error("--users and --concurrency must be at least 1")
    args.start = args.start or not args.url
    args.reads = args.users if args.reads is None else args.reads
    args.groups = max(1, args.users // 10) if args.groups is None else args.groups
    for item in args.stack_env:
        if "=" not in item:
            p.error(f"--stack-env {item!r}: expected NAME=VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    meta = {"users": args.users, "reads": args.reads, "groups": args.groups,
            "members_per_group": args.members_per_group, "concurrency": args.concurrency}
    if args.start:
        from tests.support.stack import running_stack

        from bench.procs import StackSampler

        tmp = Path(tempfile.mkdtemp(prefix="scimbus-bench-"))
        log_tail = ""
        store = "PostgreSQL" if args.database_url else "SQLite"
        print(f"bench: starting a stack ({store}, {args.workers} workers) under {tmp} ...", file=sys.stderr,
              flush=True)
        try:
            env = dict(item.split("=", 1) for item in args.stack_env)
            with running_stack(tmp, database_url=args.database_url, workers=args.workers,
                               extra_env=env) as stack:
                meta.update(url=stack.url, mode=f"stack started by the bench: {store}, "
                                                f"{args.workers} workers")
                sampler = StackSampler(stack.proc.pid).start()
                try:
                    outcome = run_load(args, stack.url, stack.token)
                finally:
                    usage = {role: u.as_dict() for role, u in sampler.stop().items()}
                if outcome is None or outcome[0]["errors"]:
                    log_tail = stack.log()[-3000:]  # the folder goes away with the stack
        except (RuntimeError, TimeoutError) as exc:
            print(f"bench: the stack did not start: {exc}", file=sys.stderr)
            return 2
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        if log_tail.strip():
            print(f"bench: end of the stack's log:\n{log_tail}", file=sys.stderr)
    else:
        token = args.token or default_token()
        if not token:
            print("bench: no token: pass --token, set SCIM_TOKEN, or run where var/token exists",
                  file=sys.stderr)
            return 2
        meta.update(url=args.url, mode="running stack")
        sampler = None
        if args.stack_pid:
            from bench.procs import StackSampler

            sampler = StackSampler(args.stack_pid).start()
        try:
            outcome = run_load(args, args.url.rstrip("/"), token)
        finally:
            usage = {role: u.as_dict() for role, u in sampler.stop().items()} if sampler else None
    if outcome is None:
        return 2
    summary, timing = outcome
    meta.update(timing)
    print(render(summary, meta, usage), flush=True)
    failed = summary["error_ratio"] > args.max_error_ratio
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, **summary, "services": usage, "failed": failed},
                                              indent=2) + "\n")
    if failed:
        print(f"bench: FAILED: {summary['errors']} errors in {summary['requests']} requests "
              f"({summary['error_ratio'] * 100:.2f}% > {args.max_error_ratio * 100:.2f}%)", file=sys.stderr)
        return 1
    return 0
