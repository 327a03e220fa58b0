"""The local run's manager stops its processes stage by stage, and kills what outstays its patience."""

from __future__ import annotations

import io
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from honcho.printer import Printer

from services.runtime.ordered_stop import OrderedManager

# Notes in a shared file which signal it got and when it exited; lingers a little before exiting.
ROLE = """
import signal, sys, time
name, log, linger = sys.argv[1], sys.argv[2], float(sys.argv[3])
def note(text):
    with open(log, "a") as f:
        f.write(f"{time.monotonic():.3f} {name} {text}\\n")
def stop(sig, frame):
    note(signal.Signals(sig).name)
    time.sleep(linger)
    note("exited")
    sys.exit(0)
for sig in (signal.SIGTERM, signal.SIGQUIT):
    signal.signal(sig, stop)
note("started")
while True:
    time.sleep(0.05)
"""


def _role(script: Path, name: str, log: Path, linger: float = 0.3) -> str:
    return f"exec {sys.executable} {script} {name} {log} {linger}"


def _run(manager: OrderedManager) -> float:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    started = time.monotonic()
    try:
        manager.loop()  # installs its own handlers for both
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    return time.monotonic() - started


def _events(log: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()[1:]) for line in sorted(log.read_text().splitlines(), key=lambda l: float(l.split()[0]))]


@pytest.fixture
def script(tmp_path) -> Path:
    path = tmp_path / "role.py"
    path.write_text(ROLE)
    return path


def test_each_stage_is_signalled_once_the_stage_before_it_has_exited(tmp_path, script):
    log = tmp_path / "events"
    manager = OrderedManager(Printer(io.StringIO()), stages=(("gateway",), ("front", "reader"), ("redis",)))
    # A process that ends by itself stops the others, as a crash of any role does in the local run.
    manager.add_process("crash", "sleep 1.5")
    for name in ("gateway", "front", "reader", "redis"):
        manager.add_process(name, _role(script, name, log))
    _run(manager)
    stops = [(name, what) for name, what in _events(log) if what != "started"]
    assert stops[:2] == [("gateway", "SIGQUIT"), ("gateway", "exited")]
    assert sorted(stops[2:6]) == [("front", "SIGTERM"), ("front", "exited"), ("reader", "SIGTERM"), ("reader", "exited")]
    assert stops[6:] == [("redis", "SIGTERM"), ("redis", "exited")]


def test_a_process_that_outstays_the_patience_is_killed_with_whatever_is_left(tmp_path, script):
    log = tmp_path / "events"
    manager = OrderedManager(Printer(io.StringIO()), stages=(("front",), ("redis",)), patience=2)
    manager.add_process("front", _role(script, "front", log, linger=30))
    manager.add_process("redis", _role(script, "redis", log))
    # Ctrl-C while nothing has exited: honcho's own kill waits for a first exit that never comes.
    threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT)).start()
    took = _run(manager)
    assert took < 10
    events = _events(log)
    assert ("front", "SIGTERM") in events and ("front", "exited") not in events
    # Its stage never came: it was killed with the front.
    assert ("redis", "started") in events and ("redis", "SIGTERM") not in events and ("redis", "exited") not in events
