"""An Entra-shaped load on scimbus and on the peers, in the same run, with targets.

The peers: scim2-server (``bench.peer``) and, given ``--scimgateway PATH``, scimgateway's
loki plugin under Bun (``bench.scimgateway``). Each phase's CPU per process is read at its
start and end; ``bench.targets19`` prints it per write and issue 19's targets.

The same count-based phases run against each server in turn (never both at once: 2 cores),
each phase by a number of client threads, every thread with its own persistent
``Client`` (keep-alive where the server keeps connections; no pool sharing):

0. ``fill-create``: ``POST /Users`` until the directory holds ``--directory-size`` users
   (at least what phases 6 and 7 need), at ``--fill-concurrency``. Pure creates: the
   create target is measured here.
1. ``query-miss`` + ``create-user``: Entra's initial cycle, the matching query
   (``GET /Users?filter=userName eq "<guid>@contoso.com"`` → empty ListResponse), then
   ``POST /Users`` with the tutorial's body (enterprise extension included).
2. ``query-hit``: ``GET /Users?filter=userName eq …`` on users drawn from the whole
   directory, at ``--read-concurrency`` (16: the target's concurrency).
3. ``patch-user-name`` (``Replace name.familyName``) and ``patch-user-manager``
   (``Add`` on the enterprise ``manager`` with the manager's id as a bare string, P8).
4. ``patch-user-disable``: ``Replace active "False"`` (Entra's default PATCH dialect).
5. ``create-group``; ``patch-group-add``: one ``{"op":"Add","path":"members",...}`` per
   member, adds of different groups interleaved (concurrent adds to one group);
   ``get-group`` checks every member added is there.
6. One member added to a big group (``--big-group`` members) vs a small one
   (``--small-group``), alternately, one request at a time (``add-big-group``,
   ``add-small-group``); the groups are built first (``setup-groups``, chunked PATCHes).
7. ``patch-many-members``: ``--big-patch`` members in one PATCH into an empty group, one
   at a time, ``--big-patch-repeats`` times; ``get-big-group`` checks they are all there.

Where the peer refuses an Entra shape, it is sent the closest shape it accepts (see
``bench.peer.probe_dialect``) and the report lists each substitution; the peer's errors
are reported in its own column and never count as scimbus's.

A request counts as an error when it fails in transport, answers a status other than the
expected one, or answers a body that says something else than it should (a miss that
finds a user, a hit that finds none or another one, a disabled user still active, a group
missing a member that was added). ``ops/s`` of an operation is its count over the wall
time of the phases it ran in. Exit status: 0, or 1 when scimbus's errors exceed
``--max-error-ratio`` (1 %), 2 when the stack cannot be reached or started. Targets that
do not hold are reported, not turned into an exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bench.client import Client, HTTPError, Response

if TYPE_CHECKING:
    from bench.peer import Dialect

ROOT = Path(__file__).resolve().parent.parent

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ADSCIM_GROUP = "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"

PHASES = {
    "fill": "0 directory fill",
    "cycle": "1 query+create users",
    "reads": "2 userName eq GETs",
    "patch": "3 user PATCHes+manager",
    "disable": "4 disables",
    "groups": "5a group creates",
    "adds": "5b member adds",
    "verify": "5c verify members",
    "setup": "6a setup big/small groups",
    "bigsmall": "6b one add: big vs small",
    "setup7": "7a setup empty groups",
    "bigpatch": "7b many members in 1 PATCH",
}
# report order
OPERATIONS = ("fill-create", "query-miss", "create-user", "query-hit", "patch-user-name",
              "patch-user-manager", "patch-user-disable", "create-group", "patch-group-add", "get-group",
              "setup-groups",
              "add-big-group", "add-small-group", "patch-many-members", "get-big-group")
ERROR_SAMPLES = 3


# --------------------------------------------------------------------------- request bodies


def _dialect(dialect: Dialect | None) -> Dialect:
    if dialect is None:
        from bench.peer import ENTRA

        return ENTRA
    return dialect


def user_body(user_name: str, dialect: Dialect | None = None) -> dict:
    """The tutorial's Create User request (entra-scim.md §9), with enterprise attributes."""
    body = {
        "schemas": [USER, ENTERPRISE],
        "externalId": str(uuid.uuid4()),
        "userName": user_name,
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Ryan Leenay", "familyName": "Leenay", "givenName": "Ryan"},
        "roles": [],
    }
    if _dialect(dialect).enterprise_attributes:
        body[ENTERPRISE] = {"employeeNumber": str(random.randrange(10**6, 10**7)), "department": "Sales"}
    return body


def group_body(name: str, dialect: Dialect | None = None) -> dict:
    """The tutorial's Create Group request, ADSCIM schema URI included."""
    schemas = [GROUP, ADSCIM_GROUP] if _dialect(dialect).adscim_group_schema else [GROUP]
    return {"schemas": schemas, "externalId": str(uuid.uuid4()), "displayName": name,
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


Check = Callable[[Response], "str | None"]


def call(client: Client, rec: Recorder, op: str, method: str, url: str, *, expect: Iterable[int],
         check: Check | None = None, **kw) -> Response | None:
    """One timed request; returns the response when it is what was expected, else None."""
    t0 = time.perf_counter()
    try:
        response = client.request(method, url, **kw)
    except HTTPError as exc:
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
    def check(response: Response) -> str | None:
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
    def check(response: Response) -> str | None:
        if response.status_code == 204 or not response.content:
            return None
        return None if predicate(response.json()) else f"{what}: {response.text[:160]}"
    return check


def _created(response: Response) -> str | None:
    return None if response.json().get("id") else f"no id in the 201: {response.text[:160]}"


def _members_check(member_ids: list[str]) -> Check:
    def check(response: Response) -> str | None:
        have = {m.get("value") for m in response.json().get("members") or []}
        missing = [m for m in member_ids if m not in have]
        return f"{len(missing)} of {len(member_ids)} members missing, e.g. {missing[:2]}" if missing else None
    return check


# --------------------------------------------------------------------------- phases


@dataclass
class Phase:
    name: str
    wall: float
    recorders: list[Recorder]
    results: list


class Progress:
    """A phase's progress on stderr (``services.cli.progress``, as ``scimbus resync`` shows
    it): click's progress bar on a terminal, a plain line every few seconds otherwise. The
    phase's threads count ``done``; a thread of its own reports it."""

    def __init__(self, label: str, total: int, stream=None) -> None:
        from services.cli.progress import Progress as Report

        self.total = total
        self.done = 0
        self.t0 = time.perf_counter()
        self._report = Report(f"bench: {label}", stream=stream)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-progress", daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._report(self.done, self.total)

    def __enter__(self) -> Progress:
        self._report.__enter__()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._report(self.done, self.total)
        self._report.__exit__(*exc)


def run_phase(name: str, clients: list[Client], tasks: list, fn,
              progress: Progress | None = None) -> Phase:
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
            except Exception as exc:  # a bug of the bench, not an error of the server: stop loudly
                crashed.append(exc)
                return
            if out is not None:
                results[i].append(out)
            if progress is not None:
                with lock:
                    progress.done += 1

    threads = [threading.Thread(target=worker, args=(i,), name=f"bench-{i}", daemon=True)
               for i in range(len(clients))]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    if progress is not None:
        progress.t0 = t0
    for t in threads:
        t.join()
    if crashed:
        raise crashed[0]
    return Phase(name, time.perf_counter() - t0, recorders, [r for rs in results for r in rs])


# --------------------------------------------------------------------------- one task of each phase


def fill_user(client: Client, rec: Recorder, task: tuple[str, Dialect]) -> tuple[str, str] | None:
    user_name, dialect = task
    response = call(client, rec, "fill-create", "POST", "/Users", json=user_body(user_name, dialect),
                    expect=(201,), check=_created)
    return (response.json()["id"], user_name) if response is not None else None


def query_then_create(client: Client, rec: Recorder,
                      task: tuple[str, Dialect]) -> tuple[str, str] | None:
    user_name, dialect = task
    params = {"filter": f'userName eq "{user_name}"'}
    if call(client, rec, "query-miss", "GET", "/Users", params=params, expect=(200,),
            check=_list_check(None)) is None:
        return None  # Entra creates only after a query that answered "absent"
    response = call(client, rec, "create-user", "POST", "/Users", json=user_body(user_name, dialect),
                    expect=(201,), check=_created)
    return (response.json()["id"], user_name) if response is not None else None


def query_hit(client: Client, rec: Recorder, user: tuple[str, str]) -> None:
    user_id, user_name = user
    call(client, rec, "query-hit", "GET", "/Users", params={"filter": f'userName eq "{user_name}"'},
         expect=(200,), check=_list_check(user_id))


def patch_user(client: Client, rec: Recorder, task: tuple[str, str, Dialect]) -> None:
    """Entra's update of an attribute, then its separate manager reference PATCH."""
    user_id, manager_id, d = task
    family = "Leenay-" + user_id[:8]
    call(client, rec, "patch-user-name", "PATCH", f"/Users/{user_id}",
         json=patch_body({"op": d.op("Replace"), "path": "name.familyName", "value": family}),
         expect=(200, 204),
         check=_body_check(lambda u: u.get("name", {}).get("familyName") == family, "familyName unchanged"))

    def manager_set(u: dict) -> bool:
        manager = (u.get(ENTERPRISE) or {}).get("manager")
        return isinstance(manager, dict) and manager.get("value") == manager_id

    call(client, rec, "patch-user-manager", "PATCH", f"/Users/{user_id}",
         json=patch_body({"op": d.op("Add"), "path": f"{ENTERPRISE}:manager",
                          "value": d.manager_value(manager_id)}),
         expect=(200, 204), check=_body_check(manager_set, "manager not set"))


def disable_user(client: Client, rec: Recorder, task: tuple[str, Dialect]) -> None:
    user_id, d = task
    call(client, rec, "patch-user-disable", "PATCH", f"/Users/{user_id}",
         json=patch_body({"op": d.op("Replace"), "path": "active", "value": d.inactive()}), expect=(200, 204),
         check=_body_check(lambda u: u.get("active") is False, "still active"))


def create_group(client: Client, rec: Recorder, task: tuple[str, list[str], Dialect]) -> tuple | None:
    name, member_ids, d = task
    response = call(client, rec, "create-group", "POST", "/Groups", json=group_body(name, d), expect=(201,),
                    check=_created)
    return (response.json()["id"], member_ids) if response is not None else None


def add_member(client: Client, rec: Recorder, task: tuple[str, str, Dialect],
               op: str = "patch-group-add"):
    group_id, member, d = task
    call(client, rec, op, "PATCH", f"/Groups/{group_id}",
         json=patch_body({"op": d.op("Add"), "path": "members", "value": [{"value": member}]}),
         expect=(204, 200))


def get_group(client: Client, rec: Recorder, task: tuple[str, list[str]]) -> None:
    """Every member added in phase 5b is there: no add lost to a concurrent one."""
    group_id, member_ids = task
    call(client, rec, "get-group", "GET", f"/Groups/{group_id}", expect=(200,),
         check=_members_check(member_ids))


def setup_groups(client: Client, rec: Recorder,
                 task: tuple[str, list[list[str]], Dialect]) -> tuple[str, str] | None:
    """(key, id) of a group built from empty with one PATCH per chunk of members, in order."""
    key, chunks, d = task
    name = f"bench-{uuid.uuid4().hex[:8]}-{key}"
    response = call(client, rec, "setup-groups", "POST", "/Groups", json=group_body(name, d), expect=(201,),
                    check=_created)
    if response is None:
        return None
    group_id = response.json()["id"]
    for chunk in chunks:
        if call(client, rec, "setup-groups", "PATCH", f"/Groups/{group_id}",
                json=patch_body({"op": d.op("Add"), "path": "members",
                                 "value": [{"value": m} for m in chunk]}),
                expect=(200, 204)) is None:
            return None
    return key, group_id


def add_big_or_small(client: Client, rec: Recorder, task: tuple[str, str, str, Dialect]) -> None:
    op, group_id, member, d = task
    add_member(client, rec, (group_id, member, d), op=op)


def patch_many(client: Client, rec: Recorder, task: tuple[str, list[str], Dialect]) -> None:
    group_id, members, d = task
    if call(client, rec, "patch-many-members", "PATCH", f"/Groups/{group_id}",
            json=patch_body({"op": d.op("Add"), "path": "members", "value": [{"value": m} for m in members]}),
            expect=(200, 204)) is not None:
        call(client, rec, "get-big-group", "GET", f"/Groups/{group_id}", expect=(200,),
             check=_members_check(members))


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
    for op in OPERATIONS:
        lat: list[float] = []
        bad = 0
        wall = 0.0
        in_phases = []
        for p in phases:
            mine = [(s, ok) for r in p.recorders for (o, s, ok) in r.samples if o == op]
            if mine:
                lat += [s for s, _ok in mine]
                bad += sum(1 for _s, ok in mine if not ok)
                wall += p.wall
                in_phases.append(p.name)
            for r in p.recorders:
                errors.setdefault(op, []).extend(r.errors.get(op, []))
        lat.sort()
        ops[op] = {
            "phases": in_phases, "count": len(lat), "errors": bad,
            "ops_per_s": round(len(lat) / wall, 1) if wall > 0 else 0.0,
            "ok_per_s": round((len(lat) - bad) / wall, 1) if wall > 0 else 0.0,
            "p50_ms": round(percentile(lat, 50) * 1000, 2), "p95_ms": round(percentile(lat, 95) * 1000, 2),
            "p99_ms": round(percentile(lat, 99) * 1000, 2),
            "max_ms": round((lat[-1] if lat else 0) * 1000, 2),
            "mean_ms": round(sum(lat) / len(lat) * 1000, 2) if lat else 0.0,
            "median_ms": round(statistics.median(lat) * 1000, 2) if lat else 0.0,
        }
    total = sum(o["count"] for o in ops.values())
    bad = sum(o["errors"] for o in ops.values())
    return {
        "operations": ops,
        "phases": [{"name": p.name, "requests": sum(len(r.samples) for r in p.recorders),
                    "wall_s": round(p.wall, 3)} for p in phases],
        "requests": total, "errors": bad, "error_ratio": (bad / total) if total else 1.0,
        "error_samples": {op: msgs[:ERROR_SAMPLES] for op, msgs in errors.items() if msgs},
    }


# --------------------------------------------------------------------------- driver


def default_token() -> str | None:
    if os.environ.get("SCIM_TOKEN"):
        return os.environ["SCIM_TOKEN"].split(",")[0].strip()
    path = Path(os.environ.get("SCIM_VAR_DIR") or ROOT / "var") / "token"
    return path.read_text().strip() if path.exists() else None


def make_clients(url: str, token: str, n: int, timeout: float) -> list[Client]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json",
               "Accept": "application/scim+json"}
    return [Client(url, headers, timeout) for _ in range(n)]


def warm_up(clients: list[Client]) -> str | None:
    """Open every connection (Entra's Test Connection query); the reason when the server says no."""
    for client in clients:
        try:
            r = client.get("/Users", params={"filter": f'userName eq "{uuid.uuid4()}"'})
        except HTTPError as exc:
            return f"cannot reach {client.base_url}: {type(exc).__name__}: {exc}"
        if r.status_code != 200:
            return f"GET {client.base_url}Users answered {r.status_code}: {r.text[:200]}"
    return None


@dataclass
class Plan:
    """The sizes of one run, the same for every server."""

    users: int
    fill: int
    reads: int
    groups: int
    members_per_group: int
    big_group: int
    small_group: int
    add_samples: int
    big_patch: int
    big_patch_repeats: int
    chunk: int

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Plan:
        base = max(args.big_group, args.small_group)
        needed = max(base + args.group_add_samples if args.group_add_samples else 0, args.big_patch)
        return cls(users=args.users, fill=max(args.directory_size - args.users, needed, 0), reads=args.reads,
                   groups=args.groups, members_per_group=args.members_per_group, big_group=args.big_group,
                   small_group=args.small_group, add_samples=args.group_add_samples, big_patch=args.big_patch,
                   big_patch_repeats=args.big_patch_repeats, chunk=args.chunk)

    @property
    def directory_size(self) -> int:
        return self.fill + self.users


def run_load(args: argparse.Namespace, label: str, url: str, token: str,
             dialect: Dialect | None = None, cpu_roots: list[int] | None = None) -> tuple[dict, dict] | None:
    """The whole workload against one server: (summary, timing) or None when it cannot be reached.

    ``cpu_roots``: the server's process trees; each phase's CPU per role goes to
    ``timing["phase_cpu"]`` (a /proc snapshot at each phase's start and end)."""
    from bench.procs import cpu_by_role

    d = _dialect(dialect)
    plan = Plan.from_args(args)
    pool = make_clients(url, token, max(args.concurrency, args.read_concurrency, args.fill_concurrency),
                        args.timeout)
    try:
        if (problem := warm_up(pool)) is not None:
            print(f"bench: {label}: {problem}", file=sys.stderr)
            return None
        rng = random.Random(args.seed)
        run_id = uuid.uuid4().hex[:6]
        phases: list[Phase] = []
        phase_cpu: dict[str, dict] = {}
        cpu0, t0 = time.process_time(), time.perf_counter()

        def phase(key: str, tasks: list, fn, concurrency: int) -> Phase:
            name = PHASES[key]
            before = cpu_by_role(cpu_roots) if cpu_roots else None
            with Progress(f"{label}: phase {name} (x{concurrency})", len(tasks)) as progress:
                p = run_phase(name, pool[:max(1, concurrency)], tasks, fn, progress)
            if before is not None:
                after = cpu_by_role(cpu_roots)
                phase_cpu[key] = {
                    "requests": sum(len(r.samples) for r in p.recorders), "concurrency": concurrency,
                    "wall_s": round(p.wall, 3),
                    "cpu_s": {role: round(after[role] - before.get(role, 0.0), 3) for role in after}}
            phases.append(p)
            return p

        filled: list[tuple[str, str]] = []
        if plan.fill:
            filled = phase("fill", [(f"fill-{run_id}-{i:07d}@contoso.com", d) for i in range(plan.fill)],
                           fill_user, args.fill_concurrency).results
            filled.sort(key=lambda u: u[1])  # creation order: member sets are the same on every server
        users = phase("cycle", [(f"{uuid.uuid4()}@contoso.com", d) for _ in range(plan.users)],
                      query_then_create, args.concurrency).results
        directory = filled + users
        if not users:
            print(f"bench: {label}: no user was created; later phases skipped", file=sys.stderr)
        else:
            reads = [rng.choice(directory) for _ in range(plan.reads)]
            phase("reads", reads, query_hit, args.read_concurrency)
            managers = [(u[0], (users[(i + 1) % len(users)] if len(users) > 1 else directory[0])[0], d)
                        for i, u in enumerate(users)]
            phase("patch", managers, patch_user, args.concurrency)
            phase("disable", [(u[0], d) for u in users], disable_user, args.concurrency)
            ids = [u[0] for u in users]
            per_group = min(plan.members_per_group, len(ids))
            groups = [(f"bench-{run_id}-group-{g:05d}",
                       [ids[(g * per_group + j) % len(ids)] for j in range(per_group)], d)
                      for g in range(plan.groups)]
            created = phase("groups", groups, create_group, args.concurrency).results
            # Entra adds members once the group exists; interleaved so that neighbours hit other groups
            phase("adds", [(gid, members[j], d) for j in range(per_group) for gid, members in created],
                  add_member, args.concurrency)
            phase("verify", created, get_group, args.concurrency)

        fill_ids = [u[0] for u in filled]
        base = max(plan.big_group, plan.small_group)
        if plan.add_samples and len(fill_ids) >= base + plan.add_samples:
            def chunks(members: list[str]) -> list[list[str]]:
                return [members[i:i + plan.chunk] for i in range(0, len(members), plan.chunk)]

            made = dict(phase("setup", [("big", chunks(fill_ids[:plan.big_group]), d),
                                        ("small", chunks(fill_ids[:plan.small_group]), d)],
                              setup_groups, 1).results)
            if made.get("big") and made.get("small"):
                extra = fill_ids[base:base + plan.add_samples]
                tasks = []
                for k, member in enumerate(extra):  # alternate, and alternate which goes first
                    pair = [("add-big-group", made["big"], member, d),
                            ("add-small-group", made["small"], member, d)]
                    tasks += pair if k % 2 == 0 else pair[::-1]
                phase("bigsmall", tasks, add_big_or_small, 1)
        if plan.big_patch and plan.big_patch_repeats and len(fill_ids) >= plan.big_patch:
            empties = phase("setup7", [(f"many-{k}", [], d) for k in range(plan.big_patch_repeats)],
                            setup_groups, 1).results
            phase("bigpatch", [(gid, fill_ids[:plan.big_patch], d) for _key, gid in empties], patch_many, 1)
        timing = {"client_cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - t0,
                  "directory_size": len(directory), "plan": plan.__dict__, "dialect": d.as_dict(),
                  "phase_cpu": phase_cpu}
        return summarise(phases), timing
    finally:
        for c in pool:
            c.close()


# --------------------------------------------------------------------------- the servers of a run


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _usage(sampler) -> dict | None:
    return {role: u.as_dict() for role, u in sampler.stop().items()} if sampler else None


def run_scimbus(args: argparse.Namespace, workers: int | None = None, label: str = "scimbus",
                load: Callable | None = None) -> dict | None:
    """The workload (or ``load(url, token)``) against scimbus: a stack the bench starts, or ``--url``."""
    from bench.procs import StackSampler

    workers = workers or args.workers
    store = "PostgreSQL" if args.database_url else "SQLite"
    if not args.start:
        token = args.token or default_token()
        if not token:
            _log("bench: no token: pass --token, set SCIM_TOKEN, or run where var/token exists")
            return None
        sampler = StackSampler(args.stack_pid).start() if args.stack_pid else None
        roots = [args.stack_pid] if args.stack_pid else None
        try:
            outcome = (load or (lambda url, token: run_load(args, label, url, token, cpu_roots=roots)))(
                args.url.rstrip("/"), token)
        finally:
            usage = _usage(sampler)
        if outcome is None:
            return None
        return {"url": args.url, "mode": "running stack", "store": "?", "outcome": outcome, "services": usage}

    from libs.config import Settings
    from tests.support.stack import running_stack

    tmp = Path(tempfile.mkdtemp(prefix="scimbus-bench-"))
    log_tail = ""
    _log(f"bench: starting a scimbus stack ({store}, {workers} workers) under {tmp} ...")
    try:
        # As shipped, not as the tests run it (they log WARNING and serve 8 threads per process).
        env = {"SCIM_LOG_LEVEL": "INFO", "SCIM_HTTP_THREADS": str(Settings.http_threads),
               **dict(item.split("=", 1) for item in args.stack_env)}
        if args.profile_front:
            from bench import front_profile

            args.profile_front.mkdir(parents=True, exist_ok=True)
            env[front_profile.PROFILE_DIR_VARIABLE] = str(args.profile_front.resolve())
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [front_profile.FOLDER, os.environ.get("PYTHONPATH")]))
        with running_stack(tmp, database_url=args.database_url, workers=workers, extra_env=env) as stack:
            sampler = StackSampler(stack.proc.pid).start()
            roots = [stack.proc.pid, *([args.postgres_pid] if getattr(args, "postgres_pid", None) else [])]
            try:
                outcome = (load or (lambda url, token: run_load(args, label, url, token, cpu_roots=roots)))(
                    stack.url, stack.token)
            finally:
                usage = _usage(sampler)
            if outcome is None or outcome[0]["errors"]:
                log_tail = stack.log()[-3000:]  # the folder goes away with the stack
            url = stack.url
    except (RuntimeError, TimeoutError) as exc:
        _log(f"bench: the stack did not start: {exc}")
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if log_tail.strip():
        _log(f"bench: end of the stack's log:\n{log_tail}")
    if outcome is None:
        return None
    return {"url": url, "mode": f"stack started by the bench: {store}, {workers} workers", "store": store,
            "outcome": outcome, "services": usage}


def _peer_args(args: argparse.Namespace) -> argparse.Namespace:
    """The workload for the peer: the same, but for its big group when ``--peer-big-group`` caps it."""
    if args.peer_big_group is None or args.peer_big_group >= args.big_group:
        return args
    return argparse.Namespace(**{**vars(args), "big_group": args.peer_big_group})


def run_peer(args: argparse.Namespace) -> dict:
    """The same workload against scim2-server on loopback; never fails the run."""
    from bench.peer import PEER_PACKAGE, ensure_peer, probe_dialect, running_peer
    from bench.procs import StackSampler

    try:
        exe = ensure_peer(Path(args.peer_venv) if args.peer_venv else None, log=_log)
    except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
        _log(f"bench: the peer cannot be installed, compared with nothing: {exc}")
        return {"skipped": f"cannot install the peer: {exc}"}
    tmp = Path(tempfile.mkdtemp(prefix="scimbus-bench-peer-"))
    _log(f"bench: starting the peer ({exe}) on loopback ...")
    try:
        with running_peer(exe, tmp, backlog=args.peer_backlog or None) as peer:
            with make_clients(peer.url, peer.token, 1, args.timeout)[0] as client:
                dialect = probe_dialect(client)
            for note in dialect.notes:
                _log(f"bench: peer refused an Entra shape: {note}")
            sampler = StackSampler(peer.proc.pid).start()
            try:
                outcome = run_load(_peer_args(args), "peer", peer.url, peer.token, dialect,
                                   cpu_roots=[peer.proc.pid])
            finally:
                usage = _usage(sampler)
            log_tail = peer.log()[-2000:] if outcome is None or outcome[0]["errors"] else ""
    except (RuntimeError, TimeoutError, OSError) as exc:
        return {"skipped": f"the peer did not start: {exc}"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if outcome is None:
        return {"skipped": f"the peer could not be reached:\n{log_tail}"}
    backlog = (f"listen backlog raised to {args.peer_backlog}" if args.peer_backlog
               else "its CLI as shipped, listen backlog 5")
    return {"url": peer.url, "mode": f"{PEER_PACKAGE}, in memory, one process; {backlog}",
            "outcome": outcome, "services": usage, "peer_log_tail": log_tail}


def run_scimgateway(args: argparse.Namespace) -> dict:
    """The same workload against scimgateway (loki, Bun) on loopback; never fails the run."""
    from bench.peer import probe_dialect
    from bench.procs import StackSampler
    from bench.scimgateway import check_source, ensure_bun, ensure_dependencies, mode, running_scimgateway

    if not args.scimgateway:
        _log("bench: scimgateway not measured: no --scimgateway PATH (a checkout of jelhub/scimgateway)")
        return {"skipped": "no --scimgateway PATH given (a checkout of jelhub/scimgateway)"}
    try:
        source = check_source(Path(args.scimgateway))
        bun = ensure_bun(log=_log)
        ensure_dependencies(source, log=_log)
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
        _log(f"bench: scimgateway cannot be set up, compared with nothing: {exc}")
        return {"skipped": f"cannot set up scimgateway: {exc}"}
    tmp = Path(tempfile.mkdtemp(prefix="scimbus-bench-scimgateway-"))
    _log(f"bench: starting scimgateway ({source}, loki plugin, {bun}) on loopback ...")
    try:
        with running_scimgateway(source, bun, tmp) as peer:
            with make_clients(peer.url, peer.token, 1, args.timeout)[0] as client:
                dialect = probe_dialect(client)
            dialect.name = "scimgateway"
            for note in dialect.notes:
                _log(f"bench: scimgateway refused an Entra shape: {note}")
            sampler = StackSampler(peer.proc.pid).start()
            try:
                outcome = run_load(_peer_args(args), "scimgateway", peer.url, peer.token, dialect,
                                   cpu_roots=[peer.proc.pid])
            finally:
                usage = _usage(sampler)
            log_tail = peer.log()[-2000:] if outcome is None or outcome[0]["errors"] else ""
    except (RuntimeError, TimeoutError, OSError) as exc:
        return {"skipped": f"scimgateway did not start: {exc}"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if outcome is None:
        return {"skipped": f"scimgateway could not be reached:\n{log_tail}"}
    return {"url": peer.url, "mode": mode(source), "outcome": outcome, "services": usage,
            "peer_log_tail": log_tail}


def _creates_only(args: argparse.Namespace, label: str, n: int) -> Callable:
    def load(url: str, token: str) -> tuple[dict, dict] | None:
        pool = make_clients(url, token, args.scaling_concurrency, args.timeout)
        try:
            if (problem := warm_up(pool)) is not None:
                _log(f"bench: {label}: {problem}")
                return None
            tag = uuid.uuid4().hex[:6]
            tasks = [(f"scale-{tag}-{i:07d}@contoso.com", None) for i in range(n)]
            with Progress(f"{label}: {n} creates (x{args.scaling_concurrency})", n) as progress:
                p = run_phase(PHASES["fill"], pool, tasks, fill_user, progress)
            return summarise([p]), {"wall_s": p.wall}
        finally:
            for c in pool:
                c.close()
    return load


def run_scaling(args: argparse.Namespace) -> dict:
    """N creates on a stack with 1 worker, then on one with 2 (a steady load, not a pre-filled queue)."""
    out: dict = {"creates": args.scaling, "concurrency": args.scaling_concurrency}
    for workers in (1, 2):
        label = f"scaling {workers} worker{'s' if workers > 1 else ''}"
        r = run_scimbus(args, workers=workers, label=label,
                        load=_creates_only(args, label, args.scaling))
        if r is None:
            out[f"workers_{workers}"] = None
            continue
        op = r["outcome"][0]["operations"]["fill-create"]
        out[f"workers_{workers}"] = {"ops_per_s": op["ops_per_s"], "errors": op["errors"],
                                     "p50_ms": op["p50_ms"], "p99_ms": op["p99_ms"]}
    one, two = out.get("workers_1"), out.get("workers_2")
    out["ratio"] = round(two["ops_per_s"] / one["ops_per_s"], 2) if one and two and one["ops_per_s"] else None
    return out


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    g = p.add_argument_group("scimbus")
    g.add_argument("--url", help="base URL of a running stack, e.g. http://127.0.0.1:8585/scim "
                                 "(without it the bench starts its own stack)")
    g.add_argument("--token", help="with --url: bearer token (default: $SCIM_TOKEN, else var/token)")
    g.add_argument("--start", action="store_true",
                   help="start a private stack for the run (the default without --url)")
    g.add_argument("--database-url",
                   help="with --start: the store's SQLAlchemy URL (default: SQLite in a temporary folder)")
    g.add_argument("--postgres", action="store_true",
                   help="with --start: run a private PostgreSQL for the run and use it as the store "
                        "(the issue's targets are stated for PostgreSQL)")
    g.add_argument("--workers", type=int, default=2,
                   help="with --start: worker processes (default %(default)s)")
    g.add_argument("--stack-env", action="append", default=[], metavar="SCIM_X=V",
                   help="with --start: extra environment for the stack (repeatable)")
    g.add_argument("--stack-pid", type=int, help="with --url: PID of its `scimbus run`, to report memory")
    g.add_argument("--profile-front", metavar="DIR", type=Path,
                   help="with --start: profile the front's request threads (cProfile, thread CPU clock; "
                        "~5x the front's CPU) into DIR; read with python -m bench.front_profile DIR")
    g = p.add_argument_group("peer (scim2-server)")
    g.add_argument("--no-peer", action="store_true", help="do not run the workload against the peer")
    g.add_argument("--peer-backlog", type=int, default=128,
                   help="listen backlog of the peer's server (its CLI's is 5: with one connection per "
                        "request, 16 clients overflow it and wait 1 s per dropped SYN); "
                        "0: its CLI as shipped (default %(default)s)")
    g.add_argument("--peer-big-group", type=int, metavar="N",
                   help="the peer's big group, when smaller than --big-group: each of its member adds "
                        "costs time in proportion to the group, so a 100,000-member group takes it "
                        "half an hour to build (default: --big-group)")
    g.add_argument("--peer-venv",
                   help="virtualenv of the peer (default: var/bench-peer/venv, created on first use)")
    g = p.add_argument_group("peer (scimgateway)")
    g.add_argument("--scimgateway", metavar="PATH",
                   help="a checkout of jelhub/scimgateway: run the workload against its loki plugin under "
                        "Bun too (Bun and its dependencies are installed from the npm registry on first "
                        "use); without it this peer is skipped")
    g = p.add_argument_group("workload")
    g.add_argument("--users", type=int, default=500,
                   help="users queried then created (Entra's initial cycle) (default %(default)s)")
    g.add_argument("--directory-size", type=int, default=10000,
                   help="users in the directory before the filtered GETs (pre-filled with plain creates; "
                        "raised to what --big-group/--big-patch need; the issue's target size is 100000)")
    g.add_argument("--fill-concurrency", type=int, default=16,
                   help="client threads of the fill (the create target is measured there) "
                        "(default %(default)s)")
    g.add_argument("--reads", type=int, default=20000,
                   help="userName eq GETs on users drawn from the whole directory; enough for a p99 of the "
                        "steady state, not of the first second's ramp (default %(default)s)")
    g.add_argument("--read-concurrency", type=int, default=16,
                   help="client threads of the filtered GETs (default %(default)s)")
    g.add_argument("--groups", type=int, help="groups created (default: users / 10, at least 1)")
    g.add_argument("--members-per-group", type=int, default=10,
                   help="member-add PATCHes per group (default %(default)s)")
    g.add_argument("--concurrency", type=int, default=8,
                   help="client threads of the other phases (default %(default)s)")
    g.add_argument("--big-group", type=int, default=2000,
                   help="members of the big group of phase 6 (the issue's is 100000) (default %(default)s)")
    g.add_argument("--small-group", type=int, default=10,
                   help="members of the small group of phase 6 (default %(default)s)")
    g.add_argument("--group-add-samples", type=int, default=50,
                   help="one-member adds to each of the big and small groups (0: skip phase 6) "
                        "(default %(default)s)")
    g.add_argument("--big-patch", type=int, default=10000,
                   help="members added by the one PATCH of phase 7 (0: skip) (default %(default)s)")
    g.add_argument("--big-patch-repeats", type=int, default=3,
                   help="PATCHes of phase 7, each into a new empty group (default %(default)s)")
    g.add_argument("--chunk", type=int, default=1000,
                   help="members per PATCH when building the big group (default %(default)s)")
    g.add_argument("--scaling", type=int, metavar="N", default=0,
                   help="with --start: also run N creates on a 1-worker stack and on a 2-worker stack "
                        "and print the throughput ratio (a steady create load, not a pre-filled queue)")
    g.add_argument("--scaling-concurrency", type=int, default=16,
                   help="client threads of --scaling (default %(default)s)")
    g.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default %(default)s)")
    g.add_argument("--max-error-ratio", type=float, default=0.01,
                   help="exit 1 above this ratio of scimbus errors (default %(default)s)")
    g.add_argument("--seed", type=int, default=1, help="seed of the read order (default %(default)s)")
    g.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    if args.url and (args.start or args.postgres or args.scaling):
        p.error("--url excludes --start, --postgres and --scaling")
    if args.postgres and args.database_url:
        p.error("--postgres and --database-url exclude each other")
    for name in ("users", "concurrency", "read_concurrency", "fill_concurrency", "scaling_concurrency",
                 "chunk", "workers"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("directory_size", "reads", "big_group", "small_group", "group_add_samples", "big_patch",
                 "big_patch_repeats", "scaling", "peer_big_group"):
        if (getattr(args, name) or 0) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative")
    args.start = args.start or not args.url
    args.groups = max(1, args.users // 10) if args.groups is None else args.groups
    for item in args.stack_env:
        if "=" not in item:
            p.error(f"--stack-env {item!r}: expected NAME=VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    from bench.report import evaluate_targets, render_all
    from bench.targets19 import evaluate_targets_19

    args = parse_args(argv)
    plan = Plan.from_args(args)
    results: dict = {
        "meta": {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(),
                 "users": args.users, "directory_size": plan.directory_size, "reads": args.reads,
                 "groups": args.groups, "members_per_group": args.members_per_group,
                 "concurrency": args.concurrency, "read_concurrency": args.read_concurrency,
                 "fill_concurrency": args.fill_concurrency, "big_group": args.big_group,
                 "peer_big_group": _peer_args(args).big_group,
                 "small_group": args.small_group, "group_add_samples": args.group_add_samples,
                 "big_patch": args.big_patch, "big_patch_repeats": args.big_patch_repeats,
                 "workers": args.workers, "argv": sys.argv[1:] if argv is None else argv},
        "servers": {}, "scaling": None,
    }
    with contextlib.ExitStack() as resources:
        if args.postgres:
            from tests.support.servers import PostgresServer

            _log("bench: starting a private PostgreSQL for the run ...")
            try:
                pg = PostgresServer(durable=True)  # the targets: durable settings as shipped
                resources.callback(pg.close)
                pg.start()
                args.database_url, args.postgres_pid = pg.url, pg.proc.pid
            except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                _log(f"bench: PostgreSQL did not start: {exc}")
                return 2
        ours = run_scimbus(args)
        if ours is None:
            return 2
        results["servers"]["scimbus"] = ours
        if not args.no_peer:
            results["servers"]["peer"] = run_peer(args)
        results["servers"]["scimgateway"] = run_scimgateway(args)
        if args.scaling:
            results["scaling"] = run_scaling(args)
    results["meta"]["store"] = ours["store"]
    results["targets"] = evaluate_targets(results)
    results["targets_19"] = evaluate_targets_19(results)
    print(render_all(results), flush=True)
    summary = ours["outcome"][0]
    failed = summary["error_ratio"] > args.max_error_ratio
    results["failed"] = failed
    if args.json:
        Path(args.json).write_text(json.dumps(_jsonable(results), indent=2) + "\n")
    if failed:
        _log(f"bench: FAILED: {summary['errors']} scimbus errors in {summary['requests']} requests "
             f"({summary['error_ratio'] * 100:.2f}% > {args.max_error_ratio * 100:.2f}%)")
        return 1
    return 0


def _jsonable(results: dict) -> dict:
    """``outcome`` (summary, timing) spelled out as the JSON's ``summary`` and ``timing``."""
    out = dict(results)
    out["servers"] = {}
    for name, server in results["servers"].items():
        server = dict(server)
        if "outcome" in server:
            summary, timing = server.pop("outcome")
            server.update(summary=summary, timing=timing)
        out["servers"][name] = server
    return out
