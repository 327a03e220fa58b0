"""The local run's process manager: honcho's, stopping the roles in the order they depend on each other.

honcho sends SIGTERM to every process at once and SIGKILL to whatever is left 5 s after the
first one exits. For this stack that undid what SIGTERM promises everywhere else (compose
stops in ``depends_on`` order, with 45-60 s of grace):

- Redis went down with everything else, so the front could not answer the writes it still
  held and a worker could not record the job in hand (a traceback per worker at every stop);
- SIGTERM is nginx's fast shutdown, which drops the requests in flight;
- 5 s cut short the front's 40 s of grace for writes waiting on the bus.

Here the stop goes in stages, each once the one before has exited: the gateway first
(SIGQUIT, nginx's graceful stop: it takes no new request and waits for the answers to those
it holds, so none of them meets a front that has gone); then the front and the reader; then
the workers, the deliverers and the sweeper; then Redis. After ``patience`` seconds, whatever
is left is killed.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
import threading
import time

from honcho.environ import parse_procfile
from honcho.manager import SYSTEM_PRINTER_NAME, Manager
from honcho.printer import Message, Printer

__all__ = ["OrderedManager", "Printer", "parse_procfile"]
"""honcho's Procfile parser and printer, for the local run: every use of honcho is here."""

WRITTEN_FOR = {"honcho": "2.0"}
"""The library minor versions whose internals this module drives (tests/services/runtime/test_library_contracts.py)."""

STAGES: tuple[tuple[str, ...], ...] = (
    ("gateway",), ("front", "reader"), ("worker", "deliverer", "sweeper"), ("redis",))
STOP_SIGNALS = {"gateway": signal.SIGQUIT}
PATIENCE = 60.0
"""Seconds from the first stop signal to SIGKILL: the front's grace (40 s), then a job in hand."""


class OrderedManager(Manager):
    def __init__(self, printer=None, stages=STAGES, patience: float = PATIENCE):
        super().__init__(printer)
        self._stages = stages
        self._patience = patience
        self._deadline: float | None = None

    def terminate(self) -> None:
        # honcho calls this on SIGINT/SIGTERM and when any process exits; only the first call counts.
        if self._terminating:
            return
        self._terminating = True
        self._deadline = time.monotonic() + self._patience
        threading.Thread(target=self._stop_in_stages, name="ordered-stop", daemon=True).start()

    def kill(self) -> None:
        # honcho's loop calls this 5 s after the first process exits, then every 0.1 s: not
        # before the patience runs out.
        if self._deadline is None or time.monotonic() >= self._deadline:
            super().kill()

    def _stop_in_stages(self) -> None:
        staged = {name for stage in self._stages for name in stage}
        unstaged = tuple(name for name in self._processes if name not in staged)
        for stage in (unstaged + self._stages[0], *self._stages[1:]):
            self._stop_stage([name for name in stage if name in self._processes])
        # Anything still running has outlasted the patience. honcho's loop would kill it too,
        # but only once some process has exited, which may never happen.
        for name, process in self._processes.items():
            if "returncode" not in process and process.get("pid") is not None:
                self._signal(name, process["pid"], signal.SIGKILL)

    def _stop_stage(self, names: list[str]) -> None:
        signalled: set[str] = set()
        while time.monotonic() < self._deadline:
            running = [n for n in names if "returncode" not in self._processes[n]]
            if not running:
                return
            for name in running:
                pid = self._processes[name].get("pid")
                if name not in signalled and pid is not None:  # None: still starting; signalled once it has a pid
                    signalled.add(name)
                    self._signal(name, pid, STOP_SIGNALS.get(name, signal.SIGTERM))
            time.sleep(0.05)

    def _signal(self, name: str, pid: int, sig: signal.Signals) -> None:
        # Through the loop's queue: the printer is not shared with this thread.
        self.events.put(Message(type="line", data=f"sending {sig.name} to {name} (pid {pid})\n",
                                time=datetime.datetime.now(), name=SYSTEM_PRINTER_NAME, colour=None))
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)  # honcho starts each process in a session of its own
