"""A user with a password, delivered to a connector of every type (a SQL application
database, a real slapd, a web hook, a SCIM relay into another app of a running stack): the
password's argon2id hash reaches none of them, and a mapping that names it is refused."""

from __future__ import annotations

import json
import tomllib

import pytest
from sqlalchemy import select

from libs.config import load_settings
from libs.connectors.mapping import MappingError
from libs.connectors.registry import build_connector
from libs.scim.schemas import USERS
from libs.store.deliveries import ResourceKey
from libs.store.directory import DirectoryStore
from libs.store.session import create_engine_from_url
from services.deliverer.fanout import DeliveryContext, deliver_now
from tests.services.test_entra_flows import create_user
from tests.support.ldap import SUFFIX, ldap_connector_toml, slapd_server
from tests.support.targets import APP_SCHEMA, HookReceiver, app_engine, create_app_schema, sql_connector_toml

pytestmark = pytest.mark.stack

SECRET = "s" * 32


@pytest.fixture(scope="module")
def slapd(tmp_path_factory):
    with slapd_server(tmp_path_factory.mktemp("slapd")) as server:
        yield server


def _connectors(tmp_path, slapd, hook_url: str, relay_url: str, relay_token: str) -> dict:
    sql_url = f"sqlite:///{tmp_path / 'app.db'}"
    create_app_schema(sql_url)
    specs = {
        "appdb": tomllib.loads(sql_connector_toml("appdb", sql_url))["connectors"]["appdb"],
        "corp": tomllib.loads(ldap_connector_toml("corp", slapd.url))["connectors"]["corp"],
        "hook": {"type": "webhook", "url": hook_url, "secret": SECRET, "users": {}},
        "relay": {"type": "scim", "url": relay_url, "token": relay_token, "users": {}},
    }
    return {name: build_connector(name, spec) for name, spec in specs.items()}


def test_a_users_password_hash_reaches_no_connector(stack, acme_token, slapd, tmp_path):
    with stack.client() as scim:
        user = create_user(scim, password="Correct-Horse-9!")
    settings = load_settings(stack.env)
    store = DirectoryStore(create_engine_from_url(settings.database))
    stored = store.get("default", USERS, user["id"])
    assert stored["password"].startswith("$argon2id$")  # what must not leave
    with HookReceiver(SECRET) as hook:
        connectors = _connectors(tmp_path, slapd, hook.url, f"{stack.url}/acme", acme_token)
        ctx = DeliveryContext(settings, store, None, connectors)
        try:
            for connector in connectors.values():
                assert deliver_now(ctx, connector, ResourceKey("default", "User", user["id"])) == "delivered", \
                    connector.name
        finally:
            for connector in connectors.values():
                connector.close()
        payloads = {"hook": [event["resource"] for event in hook.events]}
    target = app_engine(f"sqlite:///{tmp_path / 'app.db'}")
    with target.connect() as conn:
        payloads["appdb"] = [dict(r._mapping) for r in conn.execute(select(APP_SCHEMA.tables["app_users"]))]
    target.dispose()
    ldap = slapd.connection()
    ldap.search(f"ou=people,{SUFFIX}", f"(employeeNumber={user['id']})", attributes=["*"])
    payloads["corp"] = [e.entry_attributes_as_dict for e in ldap.entries]
    ldap.unbind()
    # The relay's remote (the stack's app "acme") as it stored what it received.
    with stack.client(acme_token) as acme:
        remote = acme.get("/acme/Users", params={"filter": f'externalId eq "{user["id"]}"'}).json()["Resources"]
    payloads["relay"] = [store.get("acme", USERS, r["id"]) for r in remote]
    store.engine.dispose()

    for name, received in payloads.items():
        assert len(received) == 1, (name, received)
        text = json.dumps(received, default=str).lower()
        assert "password" not in text and "argon2" not in text, (name, received)


@pytest.mark.parametrize("spec", [
    {"type": "sql", "url": "sqlite://", "users": {"table": "t", "key": "k", "columns": {"k": "id", "pw": "password"}}},
    {"type": "ldap", "url": "ldaps://ldap.example", "users": {"dn": "uid={uid},ou=people,dc=x", "attributes": {
        "uid": "userName", "employeeNumber": "id", "userPassword": "urn:ietf:params:scim:schemas:core:2.0:User:password"}}},
    {"type": "webhook", "url": "https://hook.example", "secret": SECRET,
     "users": {"fields": {"secret": {"template": "{userName}:{password}"}}}},
    {"type": "scim", "url": "https://scim.example", "users": {"fields": {
        "userName": "userName", "bossPassword": {"path": "manager", "ref": "Password"}}}},
], ids=["sql-column", "ldap-attribute-by-urn", "webhook-template", "scim-ref"])
def test_a_mapping_that_names_the_password_is_refused_when_the_config_loads(spec):
    with pytest.raises(MappingError, match="password is returned: never"):
        build_connector("target", spec)
