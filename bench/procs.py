"""Memory and CPU of a stack's processes, per role, read from /proc (Linux only).

The roles are found under the ``scimbus run`` process by command line: ``scimbus front``
(after gunicorn's exec: ``services.front.wsgi``), ``scimbus reader``, ``scimbus worker``
(the RQ pool and the workers it forks), ``scimbus deliverer`` (likewise), ``scimbus
sweeper``, nginx, redis-server. A process whose own command
line names no role (a shell honcho puts in between, a fork) takes its parent's role.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass, field
from pathlib import Path

ROLES = ("front", "reader", "worker", "deliverer", "sweeper", "gateway", "redis", "postgres", "run", "peer")
"""``run`` is ``scimbus run`` itself and the processes honcho forks to watch each service;
``postgres`` the bench's private PostgreSQL (its postmaster and backends); ``peer`` a server
the bench compares with (scim2-server, or scimgateway under Bun)."""
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(state, ppid, cpu seconds) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = raw[raw.rindex(")") + 2:].split()
    return f[0], int(f[1]), (int(f[11]) + int(f[12])) / _TICK


def _rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _pss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return []
    return [a for a in raw.split("\0") if a]


def role_of(argv: list[str]) -> str | None:
    if not argv:
        return None
    head = os.path.basename(argv[0])
    joined = " ".join(argv)
    if head.startswith("nginx") or joined.startswith("nginx:"):
        return "gateway"
    if head.startswith("redis-server"):
        return "redis"
    if head in ("postgres", "postmaster") or joined.startswith("postgres:"):
        return "postgres"
    if head == "bun":
        return "peer"
    if any(os.path.basename(a) == "scim2-server" for a in argv[:2]) or "scim2_server" in joined:
        return "peer"
    if head in ("sh", "dash", "bash"):  # honcho's `sh -c <command>`: counted with the command it runs
        return role_of(argv[2].split()) if len(argv) > 2 and argv[1] == "-c" else None
    for role in ("deliverer", "sweeper", "front", "reader", "worker"):
        if f"scimbus {role}" in joined or f"services.{role}" in joined:
            return role
    if "scimbus run" in joined or "services.cli run" in joined:
        return "run"
    return None


def _cpu_with_children(pid: int) -> float | None:
    """CPU seconds of a process plus those of the children it has reaped (an RQ work-horse,
    a PostgreSQL backend that ended): what the process tree spent, counted once."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = raw[raw.rindex(")") + 2:].split()
    return sum(int(x) for x in f[11:15]) / _TICK


def cpu_by_role(roots: list[int]) -> dict[str, float]:
    """CPU seconds used so far per role by the trees under ``roots`` (a snapshot: the bench
    takes one at each phase's start and end, outside the timed requests)."""
    roles: dict[int, str] = {}
    out: dict[str, float] = {}
    for root in roots:
        for pid, ppid in [(root, 0), *descendants(root)]:
            roles[pid] = role_of(_cmdline(pid)) or roles.get(ppid) or "other"
            cpu = _cpu_with_children(pid)
            if cpu is not None:
                out[roles[pid]] = out.get(roles[pid], 0.0) + cpu
    return out


def descendants(root: int) -> list[tuple[int, int]]:
    """(pid, ppid) of every live process below ``root``, parents before children."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _stat(int(entry.name))) is not None and st[0] not in ("Z", "X"):
            children.setdefault(st[1], []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        parent = todo.pop(0)
        for child in children.get(parent, []):
            out.append((child, parent))
            todo.append(child)
    return out


@dataclass
class RoleUsage:
    procs: int = 0
    rss_start: float = 0.0  # MB
    rss_end: float = 0.0
    rss_peak: float = 0.0
    pss_end: float = 0.0
    pss_peak: float = 0.0
    cpu: list[float] = field(default_factory=list)  # CPU seconds used during the run, per process

    def as_dict(self) -> dict:
        return {"procs": self.procs, "rss_start_mb": round(self.rss_start, 1),
                "rss_end_mb": round(self.rss_end, 1), "rss_peak_mb": round(self.rss_peak, 1),
                "pss_end_mb": round(self.pss_end, 1), "pss_peak_mb": round(self.pss_peak, 1),
                "cpu_s_per_process": [round(c, 2) for c in self.cpu]}


class StackSampler:
    """Samples the tree under ``root`` every ``interval`` seconds while running.

    The sampling runs in a process of its own: a tick is ~4 ms of Python (the walk of
    /proc, a stat per process), and in the load generator's process it held the GIL its
    client threads wait on, every half second, which showed in their tail latencies."""

    def __init__(self, root: int, interval: float = 0.5, pss_every: int = 4) -> None:
        self.root = root
        self.interval = interval
        self.pss_every = pss_every  # smaps_rollup costs more than statm: every few samples
        self._ticks = 0
        self._pss_peak: dict[str, float] = {}
        self._roles: dict[int, str] = {}  # pid -> role (cmdline read once per pid)
        self._cpu0: dict[int, float] = {}
        self._cpu1: dict[int, float] = {}
        self._first: dict[str, float] | None = None
        self._last: dict[str, float] = {}
        self._peak: dict[str, float] = {}
        self._last_pids: dict[str, list[int]] = {}
        self._started = False
        context = multiprocessing.get_context("fork")
        self._stop = context.Event()
        self._results, self._send = context.Pipe(duplex=False)
        self._process = context.Process(target=self._loop, name="stack-sampler", daemon=True)

    def _sample(self) -> None:
        rss: dict[str, float] = {}
        pss: dict[str, float] = {}
        with_pss = self._ticks % self.pss_every == 0
        self._ticks += 1
        pids: dict[str, list[int]] = {}
        for pid, ppid in [(self.root, 0), *descendants(self.root)]:
            if pid not in self._roles:
                self._roles[pid] = role_of(_cmdline(pid)) or self._roles.get(ppid) or "other"
            role = self._roles[pid]
            if (st := _stat(pid)) is None:
                continue
            # a process first seen after the first sample (a respawned worker) started from zero
            self._cpu0.setdefault(pid, st[2] if not self._started else 0.0)
            self._cpu1[pid] = st[2]
            rss[role] = rss.get(role, 0.0) + _rss_bytes(pid) / 2**20
            if with_pss:
                pss[role] = pss.get(role, 0.0) + _pss_bytes(pid) / 2**20
            pids.setdefault(role, []).append(pid)
        if self._first is None:
            self._first = rss
        self._started = True
        self._last, self._last_pids = rss, pids
        for role, mb in rss.items():
            self._peak[role] = max(self._peak.get(role, 0.0), mb)
        for role, mb in pss.items():
            self._pss_peak[role] = max(self._pss_peak.get(role, 0.0), mb)

    def _loop(self) -> None:
        self._sample()
        while not self._stop.wait(self.interval):
            self._sample()
        self._send.send(self._report())

    def start(self) -> StackSampler:
        self._process.start()
        self._send.close()  # the child's end only: a sampler that dies gives EOFError, not a hang
        return self

    def stop(self) -> dict[str, RoleUsage]:
        self._stop.set()
        usage = self._results.recv()
        self._process.join()
        return usage

    def _report(self) -> dict[str, RoleUsage]:
        self._ticks = 0  # the last sample reads PSS too
        self._sample()
        out: dict[str, RoleUsage] = {}
        for role in sorted(set(self._peak) | set(self._first or {}),
                           key=lambda r: (ROLES.index(r) if r in ROLES else len(ROLES), r)):
            pids = self._last_pids.get(role, [])
            role_pids = [p for p, r in self._roles.items() if r == role]
            out[role] = RoleUsage(
                procs=len(pids),
                rss_start=(self._first or {}).get(role, 0.0),
                rss_end=self._last.get(role, 0.0),
                rss_peak=self._peak.get(role, 0.0),
                pss_end=(pss_end := sum(_pss_bytes(p) for p in pids) / 2**20),
                pss_peak=max(self._pss_peak.get(role, 0.0), pss_end),
                cpu=sorted((self._cpu1.get(p, 0.0) - self._cpu0.get(p, 0.0) for p in role_pids
                            if p in self._cpu1), reverse=True),
            )
        return out

