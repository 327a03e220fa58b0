"""In-memory filter evaluation: the reference semantics the SQL translation is compared with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from libs.scim.errors import InvalidFilter
from libs.scim.evaluate import matches
from libs.scim.filter import parse_filter, parse_patch_path
from libs.scim.schemas import ENTERPRISE_USER, GROUPS, USERS
from libs.scim.validate import MEMBERS, validate_resource

SAMPLES = Path(__file__).parents[2] / "samples"


@pytest.fixture(scope="module")
def babs() -> dict[str, Any]:
    body = json.loads((SAMPLES / "rfc7643-8.3-enterprise_user.json").read_text())
    doc = validate_resource(body, USERS)
    return {**doc, "id": body["id"], "meta": body["meta"]}


def check(text: str, doc: dict[str, Any]) -> bool:
    return matches(parse_filter(text), doc, USERS)


@pytest.mark.parametrize(
    "text",
    [
        'userName eq "BJENSEN@example.com"',
        'USERNAME Eq "bjensen@example.com"',
        f'{"urn:ietf:params:scim:schemas:core:2.0:User"}:userName eq "bjensen@example.com"',
        'name.familyName co "ens"',
        'userName sw "bjen" and userName ew "EXAMPLE.COM"',
        'emails[type eq "work" and value co "@example.com"]',
        'emails[type eq "work"].value eq "bjensen@example.com"',
        'emails.type eq "home"',
        'emails co "jensen.org"',
        "emails pr",
        'title pr and not (nickName eq "x")',
        "active eq true",
        "active ne false",
        f'{ENTERPRISE_USER}:employeeNumber eq "701984"',
        'manager eq "26118915-6090-4610-87e4-49d8ca9f808d"',
        'id eq "2819c223-7f76-453a-919d-413861904646" and manager eq "26118915-6090-4610-87e4-49d8ca9f808d"',
        "manager.value pr",
        'meta.lastModified gt "2011-05-13T04:42:33Z"',
        'meta.lastModified eq "2011-05-13T06:42:34+02:00"',
        'meta.created lt "2011-05-13T04:42:34Z" or userName eq "nobody"',
        'userName gt "a" and userName lt "c"',
        'userName ge "bjensen@example.com" and userName le "BJENSEN@EXAMPLE.COM"',
        'nickName ne "Barbara"',
        'preferredLanguage ne "fr"',
        "entitlements eq null",
        "profileUrl ne null",
        "title ne null",
        'externalId eq "701984"',
    ],
)
def test_filters_that_match_the_rfc_enterprise_user(babs, text):
    assert check(text, babs) is True


@pytest.mark.parametrize(
    "text",
    [
        'id eq "2819C223-7F76-453A-919D-413861904646"',
        'externalId eq "701984 "',
        'emails[type eq "work" and value co "jensen.org"]',
        'emails[type eq "other"]',
        'emails.type ne "home"',
        'nickName eq "babs "',
        "entitlements pr",
        'entitlements.value eq "x"',
        "nickName eq 5",
        'active eq "true"',
        'meta.lastModified gt "not a date"',
        "title eq null",
        'manager eq "26118915-6090-4610-87E4-49D8CA9F808D"',
        "not (userName pr)",
        "displayName lt null",
    ],
)
def test_filters_that_do_not_match_the_rfc_enterprise_user(babs, text):
    assert check(text, babs) is False


def test_a_missing_attribute_is_not_eq_but_is_ne_anything():
    doc = {"userName": "u"}
    assert check('title eq "x"', doc) is False
    assert check('title ne "x"', doc) is True
    assert check("title pr", doc) is False


@pytest.mark.parametrize("value", [None, "", [], {}])
def test_pr_is_false_for_unassigned_values(value):
    assert matches(parse_filter("title pr"), {"title": value}, USERS) is False
    assert matches(parse_filter("x pr"), {"x": value}, None) is False


@pytest.mark.parametrize(
    "text",
    [
        "active gt true",
        'active co "t"',
        'active sw "t"',
        'x509Certificates.value gt "a"',
        'meta.created co "2011"',
        'favouriteColour eq "blue"',
        'name eq "x"',
        'emails[type eq "work"] and emails[display[x eq "y"] pr]',
        'userName[value eq "x"]',
        'emails[colour eq "red"]',
    ],
)
def test_unsupported_comparisons_and_unknown_attributes_are_invalid_filter(babs, text):
    with pytest.raises(InvalidFilter):
        check(text, babs)


def test_value_filters_evaluate_within_one_element():
    emails = USERS.resolve("emails").attribute
    element = {"value": "A@Example.com", "type": "work", "primary": True}
    assert matches(
        parse_filter('value eq "a@example.com" and primary eq true'), element, USERS, within=emails
    )
    assert not matches(parse_filter('type eq "home"'), element, USERS, within=emails)
    with pytest.raises(InvalidFilter):
        matches(parse_filter('emails.value eq "x"'), element, USERS, within=emails)


def test_member_values_are_case_exact_and_display_is_not():
    member = {"value": "AbC", "display": "Babs Jensen", "type": "User"}
    assert matches(parse_filter('value eq "AbC"'), member, GROUPS, within=MEMBERS)
    assert not matches(parse_filter('value eq "abc"'), member, GROUPS, within=MEMBERS)
    assert matches(parse_filter('display sw "babs"'), member, GROUPS, within=MEMBERS)


def test_a_patch_path_filter_is_evaluated_the_same_way(babs):
    path = parse_patch_path('addresses[type eq "work" and postalCode sw "916"].streetAddress')
    addresses = USERS.resolve("addresses").attribute
    hits = [a for a in babs["addresses"] if matches(path.filter, a, USERS, within=addresses)]
    assert [a["type"] for a in hits] == ["work"]


def test_schemaless_evaluation_compares_strings_case_insensitively_and_numbers_numerically():
    doc = {"Name": {"Given": "Babs"}, "count": 3, "flag": True, "tags": [{"v": "a"}, {"v": "b"}]}
    assert matches(parse_filter('name.given eq "BABS"'), doc, None)
    assert matches(parse_filter("count gt 2.5 and count le 3"), doc, None)
    assert not matches(parse_filter('count eq "3"'), doc, None)
    assert matches(parse_filter("flag eq true"), doc, None)
    assert not matches(parse_filter("flag gt false"), doc, None)
    assert matches(parse_filter('tags[v eq "b"]'), doc, None)


def test_not_and_or_compose_as_boolean_connectives(babs):
    assert check('not (userName eq "x") and (title eq "x" or title eq "tour guide")', babs)
    assert not check('not (userName pr or title eq "x")', babs)
