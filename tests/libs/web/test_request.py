"""The path as a client meant it (``libs.web.request.LenientPaths``)."""

from __future__ import annotations

import pytest

from libs.web.request import LenientPaths


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
