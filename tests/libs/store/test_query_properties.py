"""Property: the SQL translation selects exactly what in-memory evaluation matches.

Random small directories (5–15 users with random userName/title/nickName/emails/active)
and random filters built from the AST, on both backends: the ids ``filter_clause`` selects
must equal the ids ``libs.scim.evaluate.matches`` accepts. The database is created once
per backend; each example replaces its rows.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

from libs.scim.filter import And, AttrPath, Compare, Filter, Not, Or, Present, ValuePath, to_text
from libs.scim.schemas import ENTERPRISE_USER, USER, USERS
from libs.store.query import filter_clause
from libs.store.tables import resources
from tests.libs.store.test_query import APP, add_resource

pytestmark = pytest.mark.db

# Small alphabets so values collide, differ only in case, hold LIKE wildcards and non-ASCII.
TEXT = st.text(alphabet="aAbB_%éÉ", min_size=0, max_size=3)
SOME_TEXT = st.text(alphabet="aAbB_%éÉ", min_size=1, max_size=3)
EMAIL_TYPES = st.sampled_from(["work", "Work", "home", "other"])


@st.composite
def email(draw) -> dict:
    out: dict = {}
    if draw(st.booleans()):
        out["value"] = draw(SOME_TEXT)
    if draw(st.booleans()):
        out["type"] = draw(EMAIL_TYPES)
    if draw(st.integers(0, 3)) == 0:
        out["primary"] = draw(st.booleans())
    return out


@st.composite
def user(draw, index: int) -> dict:
    doc: dict = {"schemas": [USER], "id": f"u{index:02d}",
                 # userName is unique case-insensitively: keep the random part, make it unique.
                 "userName": draw(TEXT) + f"#{index}"}
    if draw(st.booleans()):
        doc["title"] = draw(TEXT)
    if draw(st.integers(0, 2)) == 0:
        doc["nickName"] = draw(SOME_TEXT)
    if draw(st.booleans()):
        doc["externalId"] = draw(SOME_TEXT) + f"#{index}"
    if draw(st.booleans()):
        doc["active"] = draw(st.booleans())
    if draw(st.integers(0, 2)) == 0:
        doc[ENTERPRISE_USER] = {"manager": {"value": draw(st.sampled_from(["u01", "U01", "u02"]))}}
    # Elements without any value ({}) are dropped by validation: they have no rows to match.
    emails = [e for e in draw(st.lists(email(), max_size=3)) if e]
    if emails:
        doc["emails"] = emails
    return doc


@st.composite
def directory(draw) -> list[dict]:
    size = draw(st.integers(5, 15))
    return [draw(user(i)) for i in range(size)]


STRING_OPS = ["eq", "ne", "co", "sw", "ew", "gt", "ge", "lt", "le"]
STRING_PATHS = [AttrPath(None, "userName"), AttrPath(None, "title"), AttrPath(None, "nickName"),
                AttrPath(None, "externalId"), AttrPath(None, "emails", "value"), AttrPath(None, "emails", "type"),
                AttrPath(None, "emails"), AttrPath(None, "USERNAME"), AttrPath(None, "id"),
                AttrPath(None, "manager"), AttrPath(ENTERPRISE_USER, "manager", "value")]
BOOL_PATHS = [AttrPath(None, "active"), AttrPath(None, "emails", "primary")]


def leaf(paths_str: list[AttrPath], paths_bool: list[AttrPath]):
    string_cmp = st.builds(Compare, st.sampled_from(paths_str), st.sampled_from(STRING_OPS),
                           st.one_of(TEXT, TEXT, st.sampled_from(["u01", "U01", "work", "WORK"]),
                                     st.sampled_from([None, 1, True])))
    bool_cmp = st.builds(Compare, st.sampled_from(paths_bool), st.sampled_from(["eq", "ne"]),
                         st.one_of(st.booleans(), st.sampled_from([None, "true"])))
    present = st.builds(Present, st.sampled_from(paths_str + paths_bool))
    return st.one_of(string_cmp, string_cmp, bool_cmp, present)


ELEMENT_LEAF = leaf([AttrPath(None, "value"), AttrPath(None, "type")], [AttrPath(None, "primary")])


def combine(children):
    return st.one_of(st.builds(And, children, children), st.builds(Or, children, children),
                     st.builds(Not, children))


ELEMENT_FILTER = st.recursive(ELEMENT_LEAF, combine, max_leaves=3)
TOP_LEAF = st.one_of(leaf(STRING_PATHS, BOOL_PATHS),
                     st.builds(ValuePath, st.just(AttrPath(None, "emails")), ELEMENT_FILTER))
FILTERS = st.recursive(TOP_LEAF, combine, max_leaves=4)


def test_sql_matches_in_memory_evaluation(engine):
    from libs.scim.evaluate import matches

    @settings(max_examples=60, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(docs=directory(), filters=st.lists(FILTERS, min_size=4, max_size=4))
    def run(docs: list[dict], filters: list[Filter]) -> None:
        with engine.begin() as conn:
            conn.execute(delete(resources))
            for doc in docs:
                add_resource(conn, USERS, doc)
        with engine.connect() as conn:
            for node in filters:
                stmt = select(resources.c.id).where(resources.c.app == APP, resources.c.resource_type == "User",
                                                    filter_clause(node, USERS))
                got = set(conn.execute(stmt).scalars())
                expected = {d["id"] for d in docs if matches(node, d, USERS)}
                assert got == expected, f"{to_text(node)}\nSQL only: {sorted(got - expected)}\n" \
                                        f"memory only: {sorted(expected - got)}\ndocs: {docs}"

    run()
