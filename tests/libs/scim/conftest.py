"""Starting resources of the PATCH tests: RFC 7643 §8.3's Babs, a bare user, a group."""

from __future__ import annotations

from typing import Any

import pytest

from libs.scim.schemas import GROUPS, USERS
from libs.scim.validate import validate_resource
from tests.libs.scim.helpers import sample


@pytest.fixture
def babs() -> dict[str, Any]:
    return validate_resource(sample("rfc7643-8.3-enterprise_user"), USERS)


@pytest.fixture
def plain_user() -> dict[str, Any]:
    return validate_resource({"userName": "bjensen"}, USERS)


@pytest.fixture
def group() -> dict[str, Any]:
    return validate_resource({"displayName": "Tour Guides"}, GROUPS)
