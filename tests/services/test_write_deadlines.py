"""A 503 means "not applied, and never will be" (issue 18 item 1), on the whole stack.

The write workers are stopped (SIGSTOP, as a host that froze or a pod that starts slowly)
while clients POST and PATCH; the front answers 503 once its SCIM_WRITE_TIMEOUT runs out,
the workers resume (SIGCONT) and find the queued jobs: none of the writes answered 503 is
applied, every write answered 201/200 is, and retrying a 503'd request applies it once.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest
from rq import Worker

from libs.bus import expired
from tests.services.conftest import unique
from tests.services.test_entra_flows import entra_user
from tests.support.stack import running_stack

pytestmark = pytest.mark.stack

WRITE_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("deadlines"), workers=2,
                       extra_env={"SCIM_WRITE_TIMEOUT": str(WRITE_TIMEOUT)}) as s:
        yield s


def write_workers(stack) -> list[int]:
    return [w.pid for w in Worker.all(connection=stack.redis()) if w.pid and "scim-writes" in w.queue_names()]


def _patch_title(title: str) -> dict:
    return {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "title", "value": title}]}


def _find(stack, user_name: str) -> list[dict]:
    with stack.client() as client:
        answer = client.get("/Users", params={"filter": f'userName eq "{user_name}"'})
    assert answer.status_code == 200, answer.text
    return answer.json()["Resources"]


def test_writes_answered_503_while_the_workers_are_stopped_are_never_applied_and_retries_apply_once(stack):
    prefix = unique("deadline")
    with stack.client() as client:
        targets = []
        for i in range(8):  # users the PATCHes will go to, created while the workers run
            answer = client.post("/Users", json=entra_user(f"{prefix}-target-{i}@contoso.com"))
            assert answer.status_code == 201, answer.text
            targets.append(answer.json()["id"])

    posts: dict[str, object] = {}
    patches: dict[str, tuple[str, object]] = {}
    lock = threading.Lock()
    over = threading.Event()

    def load(k: int) -> None:
        """POSTs and PATCHes in turn, from before the stop until after the workers resume."""
        n = 0
        with stack.client() as client:
            while not over.is_set():
                name = f"{prefix}-{k}-{n:04d}@contoso.com"
                try:
                    status: object = client.post("/Users", json=entra_user(name)).status_code
                except Exception as exc:
                    status = repr(exc)
                title = f"title-{k}-{n}"
                target = targets[(k + n) % len(targets)]
                try:
                    patched: object = client.patch(f"/Users/{target}", json=_patch_title(title)).status_code
                except Exception as exc:
                    patched = repr(exc)
                with lock:
                    posts[name] = status
                    patches[title] = (target, patched)
                n += 1

    clients = [threading.Thread(target=load, args=(k,)) for k in range(4)]
    for t in clients:
        t.start()
    time.sleep(1.0)
    pids = write_workers(stack)
    assert pids, "no write worker registered"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 60
        while True:  # until the front has answered 503 to both kinds of write
            with lock:
                post_503 = [n for n, s in posts.items() if s == 503]
                patch_503 = [t for t, (_, s) in patches.items() if s == 503]
            if len(post_503) >= 3 and len(patch_503) >= 3:
                break
            assert time.monotonic() < deadline, (posts, patches)
            time.sleep(0.2)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    time.sleep(2.0)  # writes in flight while the workers resume: some acknowledged
    over.set()
    for t in clients:
        t.join(60)

    redis = stack.redis()
    drained = time.monotonic() + 30
    while redis.llen("rq:queue:scim-writes"):
        assert time.monotonic() < drained, "the workers did not drain the queue"
        time.sleep(0.2)
    time.sleep(1.0)  # the last job taken finishes

    statuses = {s for s in [*posts.values(), *(s for _, s in patches.values())]}
    assert statuses <= {201, 200, 503} | {s for s in statuses if isinstance(s, str) or s == 500}, statuses
    for name, status in posts.items():
        found = _find(stack, name)
        if status == 201:
            assert len(found) == 1, f"acknowledged create {name} lost"
        elif status == 503:
            assert not found, f"create {name} answered 503 was applied"
    with stack.client() as client:
        current = {t: client.get(f"/Users/{t}").json() for t in targets}
    titles = {doc.get("title") for doc in current.values()}
    applied_503 = [t for t, (_, s) in patches.items() if s == 503 and t in titles]
    assert not applied_503, f"PATCHes answered 503 were applied: {applied_503}"
    # The last acknowledged PATCH of each user is its title (each client waits for its answer).
    for title, (target, status) in patches.items():
        if status == 200 and current[target].get("title") != title:
            later = [t for t, (u, s) in patches.items() if u == target and s == 200]
            assert current[target].get("title") in later, (title, current[target].get("title"))

    metrics = httpx.get(f"http://127.0.0.1:{stack.ports['SCIM_WORKER_METRICS_PORT']}/metrics").text
    counted = [line for line in metrics.splitlines() if line.startswith("scim_writes_expired_total ")]
    assert counted and float(counted[0].split()[1]) >= 1, counted

    listed = expired.recent(redis, "scim-writes")
    assert listed, "no write was recorded as expired"
    assert {e["reason"] for e in listed} <= {"abandoned", "expired"}
    for entry in listed:
        if entry["op"] == "create":
            with stack.client() as client:
                assert client.get(f"/Users/{entry['resource_id']}").status_code == 404

    # Entra retries what it was told failed: each retry applies, once.
    retried = post_503[:3]
    with stack.client() as client:
        for name in retried:
            answer = client.post("/Users", json=entra_user(name))
            assert answer.status_code == 201, answer.text
        target = targets[0]
        answer = client.patch(f"/Users/{target}", json=_patch_title("retried"))
        assert answer.status_code == 200, answer.text
        assert client.get(f"/Users/{target}").json()["title"] == "retried"
    for name in retried:
        assert len(_find(stack, name)) == 1
