"""Upgrades from every earlier revision (issue 18): a database made at each Alembic revision,
filled as that release filled it, upgraded to head on SQLite and PostgreSQL, reads back
through the API (the reader's app) and the store.

The revisions come from Alembic's script directory, not a list kept here: a new migration
runs in this test at once, and fails it until ``FIXTURES`` says what a database at that
revision holds.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from alembic.script import ScriptDirectory
from cryptography.hazmat.primitives import serialization
from sqlalchemy import func, inspect, select, text

from libs.config import load_settings
from libs.scim.schemas import ENTERPRISE_USER
from libs.security.jwt_tokens import SigningKeys, public_pem_of
from libs.security.key_encryption import Sealer
from libs.store import deliveries
from libs.store.migrate import alembic_config, upgrade
from libs.store.session import create_engine_from_url
from libs.store.tables import metadata
from tests.libs.store import upgrade_fixtures as fx

pytestmark = pytest.mark.db

FIXTURES = {
    "0001": fx.at(1),
    "0002": fx.at(2),
    "0003": fx.at(3),
    "0004": fx.at(4),
    "0005": fx.at(5),
    "0006": fx.at(6),  # the delivery log (and an index)
    # A revision that changes no table the fixtures write may reuse the one before it, e.g.
    # "0006": fx.at(5),  # an index only
}
STATIC_TOKEN = "static-token-" + "s" * 24


def revisions() -> list[str]:
    """Every revision, oldest first, as Alembic walks them."""
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def fixture_for(revision: str):
    if revision not in FIXTURES:
        pytest.fail(f"migration {revision} has no data fixture: add one to FIXTURES in {__file__} "
                    "(rows as a database at that revision holds them; see tests/libs/store/upgrade_fixtures.py)",
                    pytrace=False)
    return FIXTURES[revision]


def test_every_revision_has_a_data_fixture():
    for revision in revisions():
        fixture_for(revision)


def test_a_revision_without_a_data_fixture_fails_with_a_message_saying_to_add_one():
    with pytest.raises(pytest.fail.Exception, match="migration 9999 has no data fixture: add one to FIXTURES"):
        fixture_for("9999")


def test_the_revisions_are_discovered_from_the_script_directory():
    found = revisions()
    assert found[:5] == ["0001", "0002", "0003", "0004", "0005"]
    assert found[-1] == ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


@pytest.mark.parametrize("revision", revisions())
def test_a_database_at_each_revision_upgrades_to_head_and_reads_back_through_the_api(
        revision, unmigrated_database_url, tmp_path):
    url = unmigrated_database_url
    settings = load_settings(database_url=url, var_dir=tmp_path, token=STATIC_TOKEN,
                             key_encryption_key=fx.KEY_ENCRYPTION_KEY)
    fill = fixture_for(revision)
    upgrade(url, revision, settings=settings)
    engine = create_engine_from_url(url)
    try:
        with engine.begin() as conn:
            expected = fill(conn)
        upgrade(url, settings=settings)
        _assert_at_head(engine)
        _assert_rows_kept(engine, expected)
        _assert_deliveries_kept(engine, expected)
        _assert_signing_key_kept(engine, expected)
    finally:
        engine.dispose()
    _assert_reads_back_through_the_api(url, tmp_path, expected)


def _assert_at_head(engine) -> None:
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one() == revisions()[-1]
    assert set(metadata.tables) <= set(inspect(engine).get_table_names())


def _assert_rows_kept(engine, expected: fx.Expected) -> None:
    with engine.connect() as conn:
        counts = {name: conn.execute(select(func.count()).select_from(metadata.tables[name])).scalar_one()
                  for name in expected.rows}
        assert counts == expected.rows
        versions = dict(conn.execute(select(metadata.tables["resources"].c.id,
                                            metadata.tables["resources"].c.version)).all())
        assert versions == {i: r.version for i, r in expected.resources.items()}
        # 0004: every userName stays bound to be unique (older rows took their name_key).
        r = metadata.tables["resources"]
        unique_keys = dict(conn.execute(select(r.c.id, r.c.unique_name_key)).all())
        assert unique_keys == {i: (x.doc["userName"].lower() if x.resource_type == "User" else
                                   x.doc["displayName"].lower() if x.unique_name else None)
                               for i, x in expected.resources.items()}
        # 0005 made the cursor key of every database, old ones included.
        service_keys = metadata.tables["service_keys"]
        assert conn.execute(select(service_keys.c.value).where(service_keys.c.name == "cursor")).scalar_one()


def _assert_deliveries_kept(engine, expected: fx.Expected) -> None:
    with engine.connect() as conn:
        pending = deliveries.pending(conn, fx.CONNECTOR, "default", ("User", "Group"))
        assert {(p.key.resource_type, p.key.resource_id): p.seq for p in pending} == expected.pending
        dead = deliveries.dead(conn, fx.CONNECTOR)
    assert [(d["resource_id"], d["reason"]) for d in dead] == (
        [(fx.BOB, "503 Service Unavailable")] if "dead_letters" in expected.rows else [])


def _assert_signing_key_kept(engine, expected: fx.Expected) -> None:
    """A key stored before 0005 (in clear) or after (sealed) keeps its kid, signs on, and its
    public half is the one published."""
    keys = SigningKeys(engine, max_age=timedelta(days=30), token_ttl=3600, refresh=0,
                       sealer=lambda: Sealer([fx.KEY_ENCRYPTION_KEY]))
    published = [k["kid"] for k in keys.jwks()["keys"]]
    if expected.signing_kid is None:
        assert published == []
        return
    assert published == [expected.signing_kid]
    kid, private = keys.current()
    assert kid == expected.signing_kid
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT public_pem FROM signing_keys")).scalar_one()
    assert public_pem_of(pem) == stored


def _assert_reads_back_through_the_api(url: str, tmp_path, expected: fx.Expected) -> None:
    from services.reader.app import create_app

    reader = create_app({"database_url": url, "var_dir": tmp_path, "token": STATIC_TOKEN}).test_client()
    # The token stored in credentials (0003 on) is still accepted; before, the static one.
    headers = {"Authorization": f"Bearer {expected.token or STATIC_TOKEN}"}

    def get(path: str, **params):
        response = reader.get(f"/scim{path}", query_string=params, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response

    for rid, resource in expected.resources.items():
        endpoint = "Users" if resource.resource_type == "User" else "Groups"
        response = get(f"/{endpoint}/{rid}")
        body = response.json
        assert body["meta"]["version"] == f'W/"{resource.version}"'
        assert response.headers["ETag"] == f'W/"{resource.version}"'
        assert body["meta"]["created"].startswith("2025-03-04T05:06:07")
        for key, value in resource.doc.items():
            assert body[key] == value, (rid, key)
        if resource.resource_type == "Group":
            assert sorted(m["value"] for m in body.get("members", [])) == sorted(resource.members)

    users = [r for r in expected.resources.values() if r.resource_type == "User"]
    groups = [r for r in expected.resources.values() if r.resource_type == "Group"]
    assert get("/Users").json["totalResults"] == len(users)
    assert get("/Groups").json["totalResults"] == len(groups)
    # Filters over the indexed columns and over the value rows each revision wrote.
    assert [r["id"] for r in get("/Users", filter='userName eq "ADELE.vance@contoso.example"').json["Resources"]
            ] == [fx.ADELE]
    assert [r["id"] for r in get("/Users", filter='title eq "engineer"').json["Resources"]] == [fx.ADELE]
    assert [r["id"] for r in get("/Users", filter=f'{ENTERPRISE_USER}:manager.value eq "{fx.ADELE}"'
                                 ).json["Resources"]] == [fx.BOB]
    assert sorted(r["id"] for r in get("/Users", filter='externalId eq "adele"').json["Resources"]) == sorted(
        r.id for r in users if r.doc.get("externalId") == "adele")
    assert sorted(r["id"] for r in get("/Groups", filter='displayName eq "Marketing"').json["Resources"]) == sorted(
        r.id for r in groups)
    adele = get(f"/Users/{fx.ADELE}").json
    assert [g["value"] for g in adele.get("groups", [])] == [fx.MARKETING]
