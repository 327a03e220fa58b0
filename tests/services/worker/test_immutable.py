"""``immutable`` attributes (RFC 7643 §2.2) keep their first value through PUT and PATCH."""

from __future__ import annotations

import pytest

from libs.scim import extensions
from libs.scim.errors import Mutability
from libs.scim.schemas import USERS
from services.worker.writes import _check_immutable

HR = "urn:ietf:params:scim:schemas:extension:hr:2.0:User"


@pytest.fixture
def hr():
    extensions.install({"schemas": [{"id": HR, "resource_type": "User", "attributes": [
        {"name": "personnelNumber", "mutability": "immutable"}, {"name": "office"}]}]})
    yield
    extensions.install({})


def test_changing_an_immutable_value_is_refused(hr):
    old = {"userName": "a", HR: {"personnelNumber": "P1", "office": "x"}}
    with pytest.raises(Mutability):
        _check_immutable(USERS, old, {"userName": "a", HR: {"personnelNumber": "P2"}})
    with pytest.raises(Mutability):
        _check_immutable(USERS, old, {"userName": "a"})


def test_setting_it_first_and_keeping_it_are_allowed(hr):
    _check_immutable(USERS, {"userName": "a"}, {"userName": "a", HR: {"personnelNumber": "P1"}})
    _check_immutable(USERS, {"userName": "a", HR: {"personnelNumber": "P1"}},
                     {"userName": "b", HR: {"personnelNumber": "P1", "office": "y"}})
