"""What real tenants send beyond Microsoft's documented flows (issue 15), over HTTP against
the whole stack, on SQLite and PostgreSQL: repeated externalIds and group names, a /Schemas
that publishes exactly the uniqueness each app enforces, lenient URLs, one policy for
undeclared attributes.

The session stack serves two apps: the default one (group names may repeat, RFC 7643) and
``acme`` (``SCIM_GROUP_DISPLAY_NAME_UNIQUENESS=acme=server``).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.services.conftest import unique
from tests.services.test_entra_flows import ENTERPRISE, GROUP, PATCH_OP, assert_scim_error, patch, query

pytestmark = pytest.mark.stack

APPS = ["default", "acme"]


@pytest.fixture(params=APPS)
def app_client(request, scim, acme):
    """(client, path prefix of the app) for each app of the session stack."""
    return (scim, "") if request.param == "default" else (acme, "/acme")


# ---------------------------------------------------------------- uniqueness, as /Schemas says

def _sample(attribute: dict[str, Any], member_id: str) -> Any:
    """A value for ``attribute`` (a /Schemas attribute document), or None when a client cannot set it."""
    if attribute["mutability"] == "readOnly":
        return None
    kind = attribute["type"]
    if kind == "complex":
        subs = {s["name"]: _sample(s, member_id) for s in attribute.get("subAttributes", [])}
        if attribute["name"] in ("members", "manager"):  # references: an existing resource's id
            subs = {"value": member_id}
        value = {k: v for k, v in subs.items() if v is not None}
        if not value:
            return None
        if "primary" in value:
            value["primary"] = True
    elif kind == "reference":
        if set(attribute.get("referenceTypes", [])) & {"User", "Group"}:
            return None
        value = f"https://example.com/{uuid.uuid4().hex}"
    else:
        value = {"string": (attribute.get("canonicalValues") or [f"v-{uuid.uuid4().hex[:12]}"])[0], "boolean": True,
                 "integer": 7, "decimal": 1.5, "dateTime": "2026-01-02T03:04:05Z", "binary": "AAEC"}[kind]
    return [value] if attribute["multiValued"] else value


def _case_variant(value: Any) -> Any:
    """The same value in another case: a case-insensitive uniqueness must still see it."""
    return value.upper() if isinstance(value, str) and value.upper() != value else value


def _attributes(client, prefix: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(endpoint, key in a body, attribute document) of every attribute the app publishes."""
    schemas = {s["id"]: s for s in client.get(f"{prefix}/Schemas").json()["Resources"]}
    out = []
    for resource_type in client.get(f"{prefix}/ResourceTypes").json()["Resources"]:
        endpoint = resource_type["endpoint"]
        for attribute in schemas[resource_type["schema"]]["attributes"]:
            out.append((endpoint, attribute["name"], attribute))
        for extension in resource_type["schemaExtensions"]:
            for attribute in schemas[extension["schema"]]["attributes"]:
                out.append((endpoint, f"{extension['schema']}:{attribute['name']}", attribute))
    # RFC 7643 §3.1's common attributes are in no schema: externalId is "uniqueness": "none".
    out += [(e, "externalId", {"name": "externalId", "type": "string", "multiValued": False, "caseExact": True,
                               "mutability": "readWrite", "uniqueness": "none"}) for e in ("/Users", "/Groups")]
    return out


def _fresh(endpoint: str) -> dict[str, Any]:
    """The required attributes, with values no other resource has."""
    if endpoint == "/Users":
        return {"userName": f"{unique('uq')}@contoso.example"}
    return {"schemas": [GROUP], "displayName": unique("uq-group")}


def assert_uniqueness_as_published(client, prefix: str, expected: dict[tuple[str, str], str]) -> None:
    """For every attribute /Schemas lists (and externalId), two resources with the same value
    (for a case-insensitive one, in another case): 409 uniqueness where the app publishes
    server or global (and a PATCH onto the value too), 201 where it publishes none."""
    member = client.post(f"{prefix}/Users", json=_fresh("/Users")).json()["id"]
    checked = {}
    for endpoint, key, attribute in _attributes(client, prefix):
        value = _sample(attribute, member)
        if value is None:
            continue
        first = client.post(f"{prefix}{endpoint}", json={**_fresh(endpoint), key: value})
        assert first.status_code == 201, (key, first.text)
        again = value if attribute.get("caseExact", True) else _case_variant(value)
        second = client.post(f"{prefix}{endpoint}", json={**_fresh(endpoint), key: again})
        if attribute["uniqueness"] == "none":
            assert second.status_code == 201, (key, second.text)
        else:
            assert_scim_error(second, 409, "uniqueness")
            renamed = client.post(f"{prefix}{endpoint}", json=_fresh(endpoint)).json()
            taken = patch(client, f"{prefix}{endpoint}/{renamed['id']}", {"op": "replace", "path": key, "value": again})
            assert_scim_error(taken, 409, "uniqueness")
        checked[(endpoint, key)] = attribute["uniqueness"]
    assert {k: v for k, v in checked.items() if v != "none"} == expected
    assert checked[("/Users", "externalId")] == checked[("/Groups", "externalId")] == "none"
    assert {("/Users", "emails"), ("/Users", "password"), ("/Users", f"{ENTERPRISE}:manager"),
            ("/Groups", "displayName"), ("/Groups", "members")} <= set(checked)  # complex, writeOnly, extensions


def test_every_attribute_is_exactly_as_unique_as_the_apps_schemas_publish(app_client):
    client, prefix = app_client
    expected = {("/Users", "userName"): "server"}
    if prefix == "/acme":  # SCIM_GROUP_DISPLAY_NAME_UNIQUENESS=acme=server
        expected[("/Groups", "displayName")] = "server"
    assert_uniqueness_as_published(client, prefix, expected)


def test_two_concurrent_creates_of_one_group_name_give_one_201_and_one_409_where_names_are_unique(stack, acme_token):
    """The unique index on unique_name_key decides a race the check before the insert cannot see."""
    import concurrent.futures

    name = unique("race-group")
    with stack.client(acme_token) as first, stack.client(acme_token) as second:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda c: c.post("/acme/Groups", json={"schemas": [GROUP], "displayName": name}),
                                    (first, second)))
        assert sorted(a.status_code for a in answers) == [201, 409]
        assert query(first, "/acme/Groups", f'displayName eq "{name}"')["totalResults"] == 1


def test_a_bulk_request_creates_users_sharing_an_external_id_and_a_group_holding_each_of_them(scim):
    nickname = unique("john")
    response = scim.post("/Bulk", json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                                        "Operations": [
        {"method": "POST", "path": "/Users", "bulkId": "contoso",
         "data": {"userName": f"{nickname}@contoso.example", "externalId": nickname}},
        {"method": "POST", "path": "/Users", "bulkId": "fabrikam",
         "data": {"userName": f"{nickname}@fabrikam.example", "externalId": nickname}},
        {"method": "POST", "path": "/Groups", "bulkId": "both",
         "data": {"schemas": [GROUP], "displayName": unique("both"),
                  "members": [{"value": "bulkId:contoso"}, {"value": "bulkId:fabrikam"}]}}]})
    ops = response.json()["Operations"]
    assert [o["status"] for o in ops] == ["201", "201", "201"], response.text
    ids = [o["location"].rsplit("/", 1)[1] for o in ops]
    group = scim.get(f"/Groups/{ids[2]}").json()
    assert sorted(m["value"] for m in group["members"]) == sorted(ids[:2])
    found = query(scim, "/Users", f'externalId eq "{nickname}"')
    assert sorted(r["id"] for r in found["Resources"]) == sorted(ids[:2])


def test_patch_and_put_may_give_a_user_an_external_id_another_user_holds(scim):
    nickname = unique("john")
    holder = scim.post("/Users", json={"userName": f"{nickname}@contoso.example", "externalId": nickname}).json()
    other = scim.post("/Users", json={"userName": f"{nickname}@fabrikam.example"}).json()
    patched = patch(scim, f"/Users/{other['id']}", {"op": "Replace", "path": "externalId", "value": nickname})
    assert patched.status_code == 200 and patched.json()["externalId"] == nickname
    put = scim.put(f"/Users/{other['id']}", json={"userName": other["userName"], "externalId": nickname})
    assert put.status_code == 200, put.text
    assert {r["id"] for r in query(scim, "/Users", f'externalId eq "{nickname}"')["Resources"]} == {
        holder["id"], other["id"]}


# ---------------------------------------------------------------- URLs as clients build them

SEARCH = "urn:ietf:params:scim:api:messages:2.0:SearchRequest"


def test_collections_ids_and_searches_answer_with_a_trailing_slash_through_the_gateway(app_client):
    """Clients that join URLs send /Users/ (and /scim//Users from a base ending in /); each
    verb, under /scim and /scim/<app>, answers as without the slash."""
    client, prefix = app_client
    name = f"{unique('slash')}@contoso.example"
    created = client.post(f"{prefix}/Users/", json={"userName": name})
    assert created.status_code == 201, created.text
    user_id = created.json()["id"]
    assert created.headers["Location"].endswith(f"{prefix}/Users/{user_id}")
    listed = client.get(f"{prefix}/Users/", params={"filter": f'userName eq "{name}"'})
    assert [r["id"] for r in listed.json()["Resources"]] == [user_id]
    doubled = f"{client.base_url}{prefix[1:] + '/' if prefix else ''}/Users"  # …/scim//Users: a base ending in /
    assert client.get(doubled, params={"filter": f'userName eq "{name}"'}).json()["totalResults"] == 1
    assert client.get(f"{prefix}/Users/{user_id}/").json()["id"] == user_id
    assert client.head(f"{prefix}/Users/{user_id}/").status_code == 200
    assert client.get(f"{prefix}/Groups/", params={"count": 1}).status_code == 200
    search = {"schemas": [SEARCH], "filter": f'userName eq "{name}"'}
    for path in (f"{prefix}/Users/.search/", f"{prefix}/.search/"):  # the gateway sends them to the reader
        found = client.post(path, json=search)
        assert found.status_code == 200 and found.json()["totalResults"] == 1, (path, found.text)
    patched = patch(client, f"{prefix}/Users/{user_id}/", {"op": "replace", "path": "title", "value": "Eng"})
    assert patched.status_code == 200 and patched.json()["title"] == "Eng"
    assert client.put(f"{prefix}/Users/{user_id}/", json={"userName": name}).status_code == 200
    for path in ("/Schemas/", "/ResourceTypes/", "/ResourceTypes/User/", "/ServiceProviderConfig/",
                 "/Schemas/urn:ietf:params:scim:schemas:core:2.0:User/"):
        assert client.get(f"{prefix}{path}").status_code == 200, path
    bulk = client.post(f"{prefix}/Bulk/", json={"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                                                "Operations": [{"method": "DELETE", "path": f"/Users/{user_id}/"}]})
    assert [o["status"] for o in bulk.json()["Operations"]] == ["204"], bulk.text
    assert_scim_error(client.delete(f"{prefix}/Users/{user_id}/"), 404)


def test_a_search_with_a_trailing_slash_needs_only_the_read_scope(stack):
    token = stack.create_token(unique("reader"), scopes="read")["token"]
    with stack.client(token) as client:
        answer = client.post("/Users/.search/", json={"schemas": [SEARCH], "filter": 'userName eq "nobody"'})
    assert answer.status_code == 200, answer.text


# ---------------------------------------------------------------- undeclared attributes

CONTOSO = "urn:ietf:params:scim:schemas:extension:Contoso:2.0:User"
BULK = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"


def _metric(stack, port_name: str, name: str, labels: str) -> float:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{stack.ports[port_name]}/metrics").text
    line = next((x for x in text.splitlines() if x.startswith(f"{name}{{") and labels in x), None)
    return float(line.rsplit(" ", 1)[1]) if line else 0.0


def _undeclared_count(stack, attribute: str) -> float:
    """What the front (bodies) and the workers (PATCH) counted for ``attribute``."""
    return sum(_metric(stack, port, "scim_undeclared_attributes_total", f'attribute="{attribute}"')
               for port in ("SCIM_FRONT_PORT", "SCIM_WORKER_METRICS_PORT"))


def _writes_with_undeclared_attributes(client, prefix: str, grade: str) -> list:
    """POST, PUT, PATCH (path, path-less, value filter, undeclared URN), Bulk: each carries
    ``urn:…:Contoso:2.0:User:<grade>``, which no schema of the stack declares."""
    name = f"{unique('cc')}@contoso.example"
    answers = [client.post(f"{prefix}/Users", json={"userName": name, CONTOSO: {grade: "A"}, "title": "Eng"})]
    user = answers[0].json()
    answers.append(client.put(f"{prefix}/Users/{user['id']}",
                              json={"userName": name, f"{CONTOSO}:{grade}": "B", "title": "Eng"}))
    for operation in ({"op": "Replace", "path": f"{CONTOSO}:{grade}", "value": "C"},
                      {"op": "add", "path": CONTOSO, "value": {grade: "D"}},
                      {"op": "replace", "value": {f"{CONTOSO}:{grade}": "E", "title": "Lead"}},
                      {"op": "replace", "path": f'{CONTOSO}:{grade}[type eq "work"].value', "value": "F"},
                      {"op": "remove", "path": f"{CONTOSO}:{grade}"}):
        answers.append(patch(client, f"{prefix}/Users/{user['id']}", operation))
    bulk = client.post(f"{prefix}/Bulk", json={"schemas": [BULK], "Operations": [
        {"method": "POST", "path": "/Users", "bulkId": "b", "data": {"userName": unique("cc"), CONTOSO: {grade: "G"}}},
        {"method": "PUT", "path": f"/Users/{user['id']}",
         "data": {"userName": name, CONTOSO: {grade: "H"}, "title": "Lead"}},
        {"method": "PATCH", "path": f"/Users/{user['id']}",
         "data": {"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": f"{CONTOSO}:{grade}", "value": "I"}]}}]})
    return answers + [(bulk, bulk.json()["Operations"])]


def test_undeclared_attributes_are_ignored_by_every_verb_logged_and_counted(stack, scim):
    grade = f"grade{uuid.uuid4().hex[:8]}"
    *answers, (bulk, bulk_ops) = _writes_with_undeclared_attributes(scim, "", grade)
    assert [a.status_code for a in answers] == [201, 200, 200, 200, 200, 200, 200], [a.text for a in answers]
    assert [o["status"] for o in bulk_ops] == ["201", "200", "200"], bulk.text
    user = scim.get(f"/Users/{answers[0].json()['id']}").json()
    assert CONTOSO not in user and CONTOSO not in user["schemas"] and grade not in str(user)
    assert user["title"] == "Lead"  # the declared attribute next to the ignored one was applied
    # Counted by the front (POST, PUT, Bulk POST and PUT: 4) and the workers (the 6 PATCHes).
    assert _undeclared_count(stack, f"{CONTOSO}:{grade}") == 10
    # Logged once per process that met it (two front and two worker processes), not once per write.
    assert 1 <= stack.log().count(f"ignored the undeclared attribute {CONTOSO}:{grade}") <= 4


def test_the_declared_enterprise_extension_keeps_working_next_to_undeclared_ones(scim):
    created = scim.post("/Users", json={"userName": unique("ent"), ENTERPRISE: {"department": "Tours", "grade": 1}})
    assert created.status_code == 201 and created.json()[ENTERPRISE] == {"department": "Tours"}
    patched = patch(scim, f"/Users/{created.json()['id']}",
                    {"op": "replace", "path": f"{ENTERPRISE}:costCenter", "value": "4711"})
    assert patched.json()[ENTERPRISE] == {"department": "Tours", "costCenter": "4711"}


STRICT_CONFIG = f"""
[[schemas]]
id = "{CONTOSO}"
resource_type = "User"

[[schemas.attributes]]
name = "costCenter"
"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def strict_stack(request, tmp_path_factory):
    """Settings other than the defaults: SCIM_UNKNOWN_ATTRIBUTES=reject, every app's group names
    unique, Contoso's extension declared (costCenter only), a short filter limit, small page,
    Bulk and body limits, and Entra's own tokens accepted; started on a database of revision
    0003 that holds data."""
    from tests.services.conftest import _fresh_schema
    from tests.support.stack import running_stack

    from libs.store.migrate import upgrade
    from libs.store.session import create_engine_from_url
    from tests.libs.store.test_migrations import fill_at_0003

    tmp = tmp_path_factory.mktemp(f"strict-{request.param}")
    config = tmp / "scimbus-test.toml"
    config.write_text(STRICT_CONFIG)
    jwks = tmp / "entra-jwks.json"
    jwks.write_text('{"keys": []}')
    database_url = (_fresh_schema(request.getfixturevalue("postgres_url")) if request.param == "postgresql"
                    else f"sqlite:///{tmp / 'strict.db'}")
    # A database of the release before 0004, holding users and a group under the old unique
    # indexes: the stack migrates it as it starts (test_a_database_from_before_0004_...).
    upgrade(database_url, "0003")
    engine = create_engine_from_url(database_url)
    fill_at_0003(engine)
    engine.dispose()
    with running_stack(tmp / "var", database_url, extra_env={
            "SCIM_UNKNOWN_ATTRIBUTES": "reject", "SCIM_GROUP_DISPLAY_NAME_UNIQUENESS": "server",
            "SCIM_MAX_FILTER_LENGTH": "400", "SCIM_CONFIG_FILE": str(config), "SCIM_APPS": "hr",
            "SCIM_MAX_RESULTS": "2", "SCIM_BULK_MAX_OPERATIONS": "3", "SCIM_MAX_BODY_BYTES": "65536",
            "SCIM_ENTRA_TENANT_ID": "00000000-0000-0000-0000-00000000e17a", "SCIM_ENTRA_JWKS": str(jwks),
            "SCIM_ENTRA_CALLERS": "default=00000000-0000-0000-0000-0000000ca11e"}) as s:
        yield s


def test_a_database_from_before_0004_keeps_its_data_and_lets_external_ids_repeat(strict_stack):
    """The stack migrated it at start: three users (externalIds john1-3) and Marketing with two of them."""
    with strict_stack.client() as client:
        found = query(client, "/Users", 'externalId eq "john1"')
        assert [r["userName"] for r in found["Resources"]] == ["John1@Contoso.example"]
        marketing = query(client, "/Groups", 'displayName eq "marketing"')["Resources"]
        assert [len(g["members"]) for g in marketing] == [2]
        assert client.post("/Users", json={"userName": "john1@fabrikam.example", "externalId": "john1"}).status_code == 201
        assert query(client, "/Users", 'externalId eq "john1"')["totalResults"] == 2
        # Names kept their uniqueness through the migration, in any case.
        assert_scim_error(client.post("/Users", json={"userName": "JOHN2@contoso.example"}), 409, "uniqueness")
        assert_scim_error(client.post("/Groups", json={"schemas": [GROUP], "displayName": "MARKETING"}), 409,
                          "uniqueness")


def test_reject_answers_every_verb_the_same_400_invalid_path_and_changes_nothing(strict_stack):
    grade = f"grade{uuid.uuid4().hex[:8]}"
    with strict_stack.client() as client:
        user = client.post("/Users", json={"userName": unique("strict"), "title": "Eng"}).json()
        answers = [client.post("/Users", json={"userName": unique("strict"), CONTOSO: {grade: "A"}}),
                   client.put(f"/Users/{user['id']}", json={"userName": user["userName"], f"{CONTOSO}:{grade}": "B"})]
        for operation in ({"op": "Replace", "path": f"{CONTOSO}:{grade}", "value": "C"},
                          {"op": "add", "path": CONTOSO, "value": {grade: "D"}},
                          {"op": "replace", "value": {f"{CONTOSO}:{grade}": "E", "title": "Lead"}},
                          {"op": "replace", "path": 'emails[colour eq "red"].value', "value": "x@contoso.example"},
                          {"op": "remove", "path": "favouriteColour"}):
            answers.append(patch(client, f"/Users/{user['id']}", operation))
        for answer in answers:
            body = assert_scim_error(answer, 400, "invalidPath")
            assert "SCIM_UNKNOWN_ATTRIBUTES=reject" in body["detail"]
        bulk = client.post("/Bulk", json={"schemas": [BULK], "Operations": [
            {"method": "POST", "path": "/Users", "bulkId": "b", "data": {"userName": unique("s"), "colour": "red"}},
            {"method": "PATCH", "path": f"/Users/{user['id']}",
             "data": {"schemas": [PATCH_OP], "Operations": [{"op": "add", "path": "colour", "value": "red"}]}}]})
        assert [(o["status"], o["response"]["scimType"]) for o in bulk.json()["Operations"]] == [
            ("400", "invalidPath"), ("400", "invalidPath")]
        after = client.get(f"/Users/{user['id']}").json()
        assert after["title"] == "Eng" and after["meta"]["version"] == user["meta"]["version"]
        # Declared in the config file: stored, patched, filterable, as before.
        declared = patch(client, f"/Users/{user['id']}", {"op": "Replace", "path": f"{CONTOSO}:costCenter",
                                                           "value": "4711"})
        assert declared.status_code == 200 and declared.json()[CONTOSO] == {"costCenter": "4711"}
        found = query(client, "/Users", f'{CONTOSO}:costCenter eq "4711"')
        assert [r["id"] for r in found["Resources"]] == [user["id"]]


# ---------------------------------------------------------------- Bulk: references in any order

def _bulk(client, *operations: dict, **extra):
    response = client.post("/Bulk", json={"schemas": [BULK], "Operations": list(operations), **extra})
    assert response.status_code == 200, response.text
    return response.json()["Operations"]


def test_bulk_operations_of_every_method_may_name_a_post_that_comes_later(scim):
    later, renamed, gone = unique("later"), unique("renamed"), unique("gone")
    ops = _bulk(
        scim,
        {"method": "POST", "path": "/Groups", "bulkId": "g",
         "data": {"schemas": [GROUP], "displayName": unique("fwd"), "members": [{"value": "bulkId:u"}]}},
        {"method": "PATCH", "path": "/Users/bulkId:u",
         "data": {"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "title", "value": "Eng"}]}},
        {"method": "PUT", "path": "/Users/bulkId:p", "data": {"userName": renamed, "title": "Put"}},
        {"method": "DELETE", "path": "/Users/bulkId:d"},
        {"method": "POST", "path": "/Users", "bulkId": "u", "data": {"userName": later}},
        {"method": "POST", "path": "/Users", "bulkId": "p", "data": {"userName": unique("p")}},
        {"method": "POST", "path": "/Users", "bulkId": "d", "data": {"userName": gone}},
    )
    assert [(o["method"], o["status"]) for o in ops] == [  # answered in request order
        ("POST", "201"), ("PATCH", "200"), ("PUT", "200"), ("DELETE", "204"), ("POST", "201"), ("POST", "201"),
        ("POST", "201")]
    user_id = ops[4]["location"].rsplit("/", 1)[1]
    assert [m["value"] for m in scim.get(ops[0]["location"].split("/scim", 1)[1]).json()["members"]] == [user_id]
    assert scim.get(f"/Users/{user_id}").json()["title"] == "Eng"
    assert scim.get(ops[5]["location"].split("/scim", 1)[1]).json()["userName"] == renamed
    assert query(scim, "/Users", f'userName eq "{gone}"')["totalResults"] == 0


def test_bulk_references_in_a_cycle_or_to_a_failed_post_are_409_and_apply_nothing(scim):
    taken = scim.post("/Users", json={"userName": unique("taken")}).json()["userName"]
    a, b = unique("cycle-a"), unique("cycle-b")
    ops = _bulk(
        scim,
        {"method": "POST", "path": "/Groups", "bulkId": "a",
         "data": {"schemas": [GROUP], "displayName": a, "members": [{"value": "bulkId:b"}]}},
        {"method": "POST", "path": "/Groups", "bulkId": "b",
         "data": {"schemas": [GROUP], "displayName": b, "members": [{"value": "bulkId:a"}]}},
        {"method": "POST", "path": "/Groups", "bulkId": "c",
         "data": {"schemas": [GROUP], "displayName": unique("c"), "members": [{"value": "bulkId:dup"}]}},
        {"method": "POST", "path": "/Users", "bulkId": "dup", "data": {"userName": taken}},
    )
    assert [o["status"] for o in ops] == ["409", "409", "409", "409"]
    assert "cycle" in ops[0]["response"]["detail"] and ops[0]["response"]["schemas"] == [
        "urn:ietf:params:scim:api:messages:2.0:Error"]
    assert "failed" in ops[2]["response"]["detail"] and ops[3]["response"]["scimType"] == "uniqueness"
    for name in (a, b):
        assert query(scim, "/Groups", f'displayName eq "{name}"')["totalResults"] == 0


def test_fail_on_errors_counts_errors_in_the_order_operations_run(scim):
    taken = scim.post("/Users", json={"userName": unique("taken")}).json()["userName"]
    never = unique("never")
    ops = _bulk(
        scim,
        {"method": "POST", "path": "/Groups", "bulkId": "g",
         "data": {"schemas": [GROUP], "displayName": unique("g"), "members": [{"value": "bulkId:u"}]}},
        {"method": "POST", "path": "/Users", "bulkId": "u", "data": {"userName": taken}},
        {"method": "POST", "path": "/Users", "bulkId": "n", "data": {"userName": never}},
        failOnErrors=1)
    # The user runs first and fails: the request stops there, before the group and the rest.
    assert [(o["bulkId"], o["status"]) for o in ops] == [("u", "409")]
    assert query(scim, "/Users", f'userName eq "{never}"')["totalResults"] == 0


def test_every_attribute_is_as_unique_as_published_where_every_app_enforces_group_names(strict_stack):
    """SCIM_GROUP_DISPLAY_NAME_UNIQUENESS=server: every app, the default one and hr."""
    hr_token = strict_stack.create_token(unique("hr"), app="hr")["token"]
    expected = {("/Users", "userName"): "server", ("/Groups", "displayName"): "server"}
    with strict_stack.client() as client, strict_stack.client(hr_token) as hr:
        assert_uniqueness_as_published(client, "", expected)
        assert_uniqueness_as_published(hr, "/hr", expected)


# ---------------------------------------------------------------- /ServiceProviderConfig tells the truth

def test_the_service_provider_config_names_every_way_in_and_each_one_works(stack, scim):
    import httpx

    config = scim.get("/ServiceProviderConfig").json()
    schemes = {s["type"]: s for s in config["authenticationSchemes"]}
    assert list(schemes) == ["oauthbearertoken", "oauth2"] and schemes["oauthbearertoken"]["primary"] is True
    token_url = stack.url.removesuffix("/scim") + "/oauth/token"
    assert token_url in schemes["oauth2"]["description"]
    client = stack.create_token(unique("spc"), client=True)
    issued = httpx.post(token_url, data={"grant_type": "client_credentials", "client_id": client["client_id"],
                                          "client_secret": client["client_secret"]}, timeout=30)
    with stack.client(issued.json()["access_token"]) as oauth:
        assert oauth.get("/Users", params={"count": 1}).status_code == 200
    assert config["changePassword"] == {"supported": True}
    user = scim.post("/Users", json={"userName": unique("pw"), "password": "Old-secret-1"}).json()
    changed = patch(scim, f"/Users/{user['id']}", {"op": "replace", "path": "password", "value": "New-secret-2"})
    assert changed.status_code == 200 and "password" not in changed.json()
    assert config["etag"] == {"supported": True} and config["patch"] == {"supported": True}
    assert config["bulk"]["maxPayloadSize"] == 1024 * 1024 and config["bulk"]["maxOperations"] == 1000


def test_the_service_provider_config_states_the_limits_in_force(strict_stack):
    """The strict stack: SCIM_MAX_RESULTS=2, SCIM_BULK_MAX_OPERATIONS=3, a 64 KiB body limit below
    the 1 MiB Bulk payload limit, and Entra's own tokens accepted for the default app."""
    hr_token = strict_stack.create_token(unique("hr"), app="hr")["token"]
    with strict_stack.client() as client, strict_stack.client(hr_token) as hr:
        config = client.get("/ServiceProviderConfig").json()
        assert config["filter"] == {"supported": True, "maxResults": 2}
        assert config["bulk"] == {"supported": True, "maxOperations": 3, "maxPayloadSize": 65536}
        names = [s["name"] for s in config["authenticationSchemes"]]
        assert names == ["OAuth Bearer Token", "OAuth 2.0 client credentials", "Microsoft Entra ID token"]
        assert "Microsoft Entra ID token" not in str(hr.get("/hr/ServiceProviderConfig").json())
        for _ in range(3):
            client.post("/Users", json={"userName": unique("limit")})
        page = client.get("/Users", params={"count": 50}).json()
        assert page["itemsPerPage"] == len(page["Resources"]) == 2 and page["totalResults"] >= 3
        delete = {"method": "DELETE", "path": "/Users/nobody"}
        assert_scim_error(client.post("/Bulk", json={"schemas": [BULK], "Operations": [delete] * 4}), 413)
        assert client.post("/Bulk", json={"schemas": [BULK], "Operations": [delete] * 3}).status_code == 200
        padded = {"schemas": [BULK], "Operations": [{**delete, "data": {"pad": "x" * 70000}}]}
        assert client.post("/Bulk", json=padded).status_code == 413


# ---------------------------------------------------------------- If-None-Match, root /.search, metrics

def test_if_none_match_star_or_the_current_version_weak_or_strong_answers_304(scim):
    user = scim.post("/Users", json={"userName": unique("etag")}).json()
    path = f"/Users/{user['id']}"
    current = scim.get(path).headers["ETag"]  # W/"1"
    for header in ("*", current, current.removeprefix("W/"), f'"999", {current.removeprefix("W/")}'):
        for method in ("GET", "HEAD"):
            answer = scim.request(method, path, headers={"If-None-Match": header})
            assert answer.status_code == 304 and answer.headers["ETag"] == current and not answer.content, header
    for header in ('"999"', 'W/"999"', "W/*"):
        assert scim.get(path, headers={"If-None-Match": header}).status_code == 200, header
    patch(scim, path, {"op": "replace", "path": "title", "value": "Eng"})
    assert scim.get(path, headers={"If-None-Match": current}).status_code == 200  # changed since
    assert_scim_error(scim.get(f"/Users/{uuid.uuid4()}", headers={"If-None-Match": "*"}), 404)


def test_the_root_search_applies_the_filter_length_limit_of_the_resource_searches(strict_stack):
    """SCIM_MAX_FILTER_LENGTH=400 on the strict stack."""
    name = unique("root")
    with strict_stack.client() as client:
        client.post("/Users", json={"userName": name, "displayName": name})
        short = f'displayName eq "{name}"'
        too_long = short + " or " + " or ".join(['displayName eq "x"'] * 30)
        assert len(short) < 400 < len(too_long)
        for path in ("/.search", "/Users/.search", "/Groups/.search"):
            assert client.post(path, json={"schemas": [SEARCH], "filter": short}).status_code == 200, path
            refused = client.post(path, json={"schemas": [SEARCH], "filter": too_long})
            assert assert_scim_error(refused, 400, "invalidFilter")["detail"].startswith("The filter is longer"), path
        assert client.post("/.search", json={"schemas": [SEARCH], "filter": short}).json()["totalResults"] == 1


def test_http_metrics_tell_users_from_groups_with_a_label_no_url_can_grow(stack, scim):
    scim.get("/Users", params={"count": 1})
    scim.get("/Groups", params={"count": 1})
    scim.post("/Users", json={"userName": unique("metric")})
    for junk in ("/Foo", "/Users/a/b/c", f"/{uuid.uuid4().hex}", f"/Users{uuid.uuid4().hex}", "/.search"):
        scim.get(junk)
    import httpx

    labels = set()
    for port in ("SCIM_READER_PORT", "SCIM_FRONT_PORT"):
        for line in httpx.get(f"http://127.0.0.1:{stack.ports[port]}/metrics").text.splitlines():
            if line.startswith("scim_http_requests_total{"):
                labels.add(line.split('resource_type="', 1)[1].split('"', 1)[0])
    assert {"User", "Group"} <= labels
    assert labels <= {"User", "Group", "Schema", "ResourceType", "ServiceProviderConfig", "Bulk", "Me", "all",
                      "unknown", ""}
    assert _metric(stack, "SCIM_READER_PORT", "scim_http_requests_total",
                   'method="GET",resource_type="Group",service="reader",status="200"') >= 1
