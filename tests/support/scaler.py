"""KEDA's scaling rule, applied to local processes: scale to zero without a cluster.

KEDA (v2.20: ``pkg/scalers/redis_scaler.go``, ``pkg/scaling/executor/scale_scaledobjects.go``)
scales a Deployment on the length of a Redis list in two phases, and ``QueueScaler`` does
the same with processes on this host, one process per replica:

- activation (0 <-> 1, KEDA's own loop, every ``pollingInterval``): the trigger is active
  while the list holds more than ``activationListLength`` items; an active trigger brings a
  Deployment at zero to one replica, and one inactive for ``cooldownPeriod`` brings it to
  zero;
- scaling (1 <-> N, the HPA that KEDA creates): ``ceil(length / listLength)`` replicas
  (an ``AverageValue`` target), between 1 and ``maxReplicaCount``; up at once, down only to
  the highest recommendation of the last ``stabilization`` seconds (the HPA's scale-down
  stabilization window, 300 s unless the ScaledObject's ``advanced`` section changes it).

A replica is one process running the role's command with the stack's environment; it is
stopped with SIGTERM, as Kubernetes stops a pod (the pool's warm shutdown: the job in hand
is finished first). A replica that dies is dropped and, if still wanted, started again.
No library does this: KEDA needs a cluster, and the rule is ten lines.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from redis import Redis

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Rule:
    """A ScaledObject's numbers (seconds where KEDA counts seconds)."""

    list_length: int = 1
    """listLength: queued jobs per replica."""
    activation: int = 0
    """activationListLength: active while the list holds MORE than this (0: from the first job)."""
    max_replicas: int = 3
    polling: float = 0.25
    """pollingInterval."""
    cooldown: float = 5.0
    """cooldownPeriod: inactive this long, the Deployment goes to zero."""
    stabilization: float = 5.0
    """The HPA's scale-down stabilization window."""


class QueueScaler:
    """Keeps ``rule``'s number of ``command`` processes running for the RQ queue ``queue``."""

    def __init__(self, redis_url: str, queue: str, command: list[str], env: dict[str, str], rule: Rule,
                 log_dir: Path) -> None:
        self.redis = Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.list_key = f"rq:queue:{queue}"
        self.command, self.rule, self.log_dir = command, rule, log_dir
        self.env = {**env, "SCIM_REDIS_URL": redis_url}
        self.replicas: list[subprocess.Popen] = []
        self.stopping: list[subprocess.Popen] = []
        self.history: list[tuple[float, int]] = [(time.monotonic(), 0)]
        """(monotonic time, replicas wanted) at each change."""
        self.started_at: list[float] = []
        """Monotonic time of each replica's start."""
        self._last_active: float | None = None
        self._recommendations: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._count = 0

    # -- the rule -------------------------------------------------------------------------
    def wanted(self, length: int, current: int, now: float) -> int:
        """Replicas KEDA and its HPA would ask for, ``length`` jobs queued and ``current`` running."""
        rule = self.rule
        active = length > rule.activation
        if active:
            self._last_active = now
        if current == 0:
            self._recommendations.clear()
            return 1 if active else 0
        if not active and (self._last_active is None or now - self._last_active >= rule.cooldown):
            return 0
        desired = min(rule.max_replicas, max(1, math.ceil(length / rule.list_length)))
        self._recommendations = [(t, r) for t, r in self._recommendations if now - t < rule.stabilization]
        self._recommendations.append((now, desired))
        return max(r for _, r in self._recommendations)

    def step(self) -> None:
        with self._lock:
            self._reap()
            length = self.redis.llen(self.list_key)
            self._scale_to(self.wanted(length, len(self.replicas), time.monotonic()))

    # -- processes ------------------------------------------------------------------------
    def _reap(self) -> None:
        self.replicas = [p for p in self.replicas if p.poll() is None]
        self.stopping = [p for p in self.stopping if p.poll() is None]

    def _scale_to(self, target: int) -> None:
        if target == len(self.replicas):
            return
        while len(self.replicas) < target:
            self._count += 1
            # Each replica its own metrics folder: a role's start empties its folder.
            env = {**self.env, "SCIM_METRICS_DIR": str(self.log_dir / f"metrics-{self._count}")}
            with open(self.log_dir / f"replica-{self._count}.log", "wb") as log:
                self.replicas.append(subprocess.Popen(self.command, cwd=ROOT, env=env, stdout=log,
                                                      stderr=subprocess.STDOUT, start_new_session=True))
            self.started_at.append(time.monotonic())
        while len(self.replicas) > target:
            proc = self.replicas.pop()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            self.stopping.append(proc)
        self.history.append((time.monotonic(), target))

    @property
    def running(self) -> int:
        """Replicas running, plus those still finishing after SIGTERM."""
        with self._lock:
            self._reap()
            return len(self.replicas) + len(self.stopping)

    @property
    def peak(self) -> int:
        return max(n for _, n in self.history)

    def wait_for(self, replicas: int, timeout: float) -> float:
        """Seconds until exactly ``replicas`` processes run (none still stopping)."""
        started = time.monotonic()
        while self.running != replicas or len(self.replicas) != replicas:
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{self.list_key}: {self.running} replicas after {timeout} s, not {replicas}; "
                                   f"history {self.history}")
            time.sleep(0.05)
        return time.monotonic() - started

    # -- the loop -------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.rule.polling):
            try:
                self.step()
            except Exception as exc:  # a Redis blip: KEDA, too, tries again at the next poll
                print(f"scaler of {self.list_key}: {exc!r}", file=sys.stderr)

    def start(self) -> QueueScaler:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"scaler-{self.list_key}", daemon=True)
        self._thread.start()
        return self

    def pause(self) -> None:
        """Stop scaling (the replicas running stay)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def close(self, timeout: float = 30) -> None:
        self.pause()
        with self._lock:
            self._scale_to(0)
        deadline = time.monotonic() + timeout
        for proc in self.stopping:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.stopping.clear()

    def __enter__(self) -> QueueScaler:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def role_command(role: str) -> list[str]:
    """One replica of a pool role: one process, no probe port (replicas of one host would share it)."""
    return [sys.executable, "-m", "services.cli", role, "--processes", "1", "--metrics-port", "0"]
