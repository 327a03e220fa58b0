"""An idle local run prints nothing after its ready line (issue 18): RQ's housekeeping
(registries cleaned every 5 s, workers started, jobs taken) is DEBUG, probes are not logged."""

from __future__ import annotations

import json
import time
import uuid

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


def test_rq_makes_its_housekeeping_records_only_where_they_are_written():
    from libs.web.logs import rq_level

    assert [rq_level(level) for level in ("DEBUG", "INFO", "WARNING", "ERROR")] == ["DEBUG", "WARNING", "WARNING", "ERROR"]


def test_at_info_the_services_log_failed_requests_and_the_gateway_logs_every_request_with_its_id(tmp_path):
    """The services' JSON line per request is off the hot path: a success is only in the
    gateway's access log, which names it by the request id the audit and any error line carry."""
    with running_stack(tmp_path, extra_env={"SCIM_LOG_LEVEL": "INFO"}) as stack:
        with stack.client() as c:
            created = c.post("/Users", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                             "userName": f"logs-{uuid.uuid4().hex[:8]}@contoso.com"})
            read = c.get(f"/Users/{created.json()['id']}")
            missing = c.get(f"/Users/{uuid.uuid4()}")
        assert (created.status_code, read.status_code, missing.status_code) == (201, 200, 404)
        ids = [r.headers["X-Request-Id"] for r in (created, read, missing)]
        access_log = stack.var_dir / "nginx" / "access.log"
        _wait_for(lambda: all(f"request_id={i}" in access_log.read_text() for i in ids), timeout=10)
        _wait_for(lambda: ids[2] in stack.log(), timeout=10)
        app_lines = [json.loads(line[line.index("{"):]) for line in stack.log().splitlines()
                     if '"logger":"scimbus.access"' in line]  # after the run's "time name |" prefix
    assert [(line["request_id"], line["status"]) for line in app_lines] == [(ids[2], 404)]
