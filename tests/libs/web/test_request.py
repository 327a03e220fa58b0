"""Reading requests: the path as a client meant it (issue 15); request ids that are ours,
never one a client chose, with the client's kept beside (issue 16)."""

from __future__ import annotations

import pytest
from flask import Flask

from libs.web.request import LenientPaths, client_request_id, request_id

app = Flask(__name__)


def routed(path: str, raw: str | None) -> str:
    seen: list[str] = []
    environ = {"PATH_INFO": path} if raw is None else {"PATH_INFO": path, "RAW_URI": raw}
    LenientPaths(lambda env, start: seen.append(env["PATH_INFO"]) or [])(environ, None)
    return seen[0]


@pytest.mark.parametrize(("path", "raw", "meant"), [
    ("/scim/Users/", "/scim/Users/?filter=x", "/scim/Users"),
    ("/scim/acme/Groups/", "/scim/acme/Groups/", "/scim/acme/Groups"),
    ("/scim/Users/42/", "/scim/Users/42/", "/scim/Users/42"),
    ("/scim/Users/.search/", "/scim/Users/.search/", "/scim/Users/.search"),
    ("/scim//Users", "/scim//Users", "/scim/Users"),
    ("/scim/Users/", None, "/scim/Users"),               # a server that keeps no raw path
    ("/scim/Users/a/", "/scim/Users/a%2F", "/scim/Users/a/"),  # an encoded slash is part of the id
    ("/scim/Users", "/scim/Users", "/scim/Users"),
])
def test_a_trailing_or_doubled_slash_the_client_wrote_changes_nothing(path, raw, meant):
    assert routed(path, raw) == meant


def test_the_gateways_id_is_ours_and_the_clients_travels_beside_it():
    headers = {"X-Request-Id": "5f0c2b1e9a8d4c3b2a1f0e9d8c7b6a59", "X-Client-Request-Id": "their-id-42"}
    with app.test_request_context("/scim/Users", headers=headers):
        assert request_id() == "5f0c2b1e9a8d4c3b2a1f0e9d8c7b6a59" == request_id()
        assert client_request_id() == "their-id-42"


def test_an_id_no_gateway_makes_is_replaced_by_one_of_ours():
    """A client that reaches the front directly cannot plant its own text as our id."""
    for given in ("", "abc", "x" * 32, "a' OR 1=1", "0" * 200, "ok; forged=1"):
        with app.test_request_context("/scim/Users", headers={"X-Request-Id": given} if given else {}):
            ours = request_id()
            assert ours != given and len(ours) == 32 and int(ours, 16) >= 0 and ours == request_id()
            assert client_request_id() is None
    with app.test_request_context("/scim/Users", headers={"X-Request-Id": "3e9d5b0c-8a1f-4c2d-9e7b-6a5f4d3c2b1a"}):
        assert request_id() == "3e9d5b0c-8a1f-4c2d-9e7b-6a5f4d3c2b1a"  # Envoy's, under the Gateway API route
