"""An idle local run prints nothing after its ready line (issue 18): RQ's housekeeping
(registries cleaned every 5 s, workers started, jobs taken) is DEBUG, probes are not logged."""

from __future__ import annotations

import time

import pytest

from tests.support.stack import running_stack

pytestmark = pytest.mark.stack

SETTLE = 3.0
"""Seconds of silence after the ready line that end the start: its last lines (a gunicorn
worker booting, the test's own readiness GETs) may come after it on a loaded host. RQ's
lines came every 5 s, so a regression still shows within IDLE."""
IDLE = 12.0
"""More than two rounds of RQ's maintenance (every 5 s)."""


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _quiet_for(stack, seconds: float):
    seen = {"size": -1, "since": time.monotonic()}

    def quiet() -> bool:
        size = len(stack.log())
        if size != seen["size"]:
            seen.update(size=size, since=time.monotonic())
        return time.monotonic() - seen["since"] >= seconds

    return quiet


def test_an_idle_local_run_prints_nothing_after_its_ready_line(tmp_path):
    # INFO, as `make run` logs; the test stacks otherwise log WARNING and above only.
    with running_stack(tmp_path, extra_env={"SCIM_LOG_LEVEL": "INFO"}) as stack:
        _wait_for(lambda: "scimbus: ready after" in stack.log())
        _wait_for(_quiet_for(stack, SETTLE))
        before = stack.log().splitlines()
        time.sleep(IDLE)
        after = stack.log().splitlines()
    assert after[len(before):] == [], "\n".join(after[len(before):])


def test_the_housekeeping_of_rq_is_debug_and_its_warnings_stay():
    import logging

    from libs.web.logs import Housekeeping

    def record(name: str, level: int) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, "cleaning registries for queue: scim-writes", (), None)

    at_info, at_debug = Housekeeping("INFO"), Housekeeping("DEBUG")
    assert not at_info.filter(record("rq.worker", logging.INFO))
    shown = record("rq.worker", logging.INFO)
    assert at_debug.filter(shown) and shown.levelname == "DEBUG"
    assert at_info.filter(record("rq.worker", logging.WARNING))  # an operator acts on these
    assert at_info.filter(record("scimbus.worker", logging.INFO))  # ours are ours to choose
