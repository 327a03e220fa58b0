"""The web hook connector against a real local HTTP server: signed events, retry rules."""

from __future__ import annotations

import pytest

from libs.connectors.base import Previous
from libs.connectors.errors import Rejected, Unavailable
from libs.connectors.registry import build_connector
from tests.support.servers import free_port
from tests.support.targets import HookReceiver

pytestmark = pytest.mark.servers  # starts servers of its own (tests/conftest.py)

SECRET = "s3cret-" + "z" * 20
DOC = {"id": "42", "userName": "ada", "meta": {"version": 'W/"3"'}}


def _hook(url: str, secret: str = SECRET):
    return build_connector("hook", {"type": "webhook", "url": url, "secret": secret, "timeout": 2, "users": {}})


def test_a_change_arrives_as_a_signed_event_with_its_version_and_seq():
    with HookReceiver(SECRET) as receiver:
        hook = _hook(receiver.url)
        hook.apply("User", DOC, hook.render("User", DOC, None), Previous(None, False, 7), None)
        hook.remove("User", "42", Previous("42", True, 8))
        hook.close()
    assert receiver.bad_signatures == 0
    assert [(e["type"], e["id"], e["version"], e["seq"]) for e in receiver.events] == \
        [("upserted", "42", 3, 7), ("deleted", "42", None, 8)]
    assert receiver.events[0]["resource"]["userName"] == "ada"


def test_a_wrong_secret_is_refused_by_the_receiver_and_dead_lettered():
    with HookReceiver(SECRET) as receiver:
        hook = _hook(receiver.url, secret="not-the-secret")
        with pytest.raises(Rejected, match="401"):
            hook.apply("User", DOC, DOC, Previous(None, False, 1), None)
        hook.close()
    assert receiver.bad_signatures == 1 and receiver.events == []


def test_a_503_or_a_refused_connection_is_retryable():
    with HookReceiver(SECRET) as receiver:
        receiver.status = 503
        hook = _hook(receiver.url)
        with pytest.raises(Unavailable, match="503"):
            hook.apply("User", DOC, DOC, Previous(None, False, 1), None)
        hook.close()
    hook = _hook(f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(Unavailable, match="unreachable"):
        hook.apply("User", DOC, DOC, Previous(None, False, 1), None)
    hook.close()
