"""Entra ID's documented request flows, replayed over HTTP against the running stack.

Each test is named after what Entra sends (../shared/entra-scim.md §3–§9), in both PATCH
dialects: the default one (capitalised ops, "False" strings, value-array member removal)
and the ``aadOptscim062020`` one (lower-case ops, booleans, path-less replace, filtered
member removal). Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import uuid

import pytest

from tests.services.conftest import unique

pytestmark = pytest.mark.stack

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
PATCH_OP = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
LIST = "urn:ietf:params:scim:api:messages:2.0:ListResponse"
ERROR = "urn:ietf:params:scim:api:messages:2.0:Error"


def entra_user(user_name: str | None = None, **extra) -> dict:
    """The tutorial's Create User body (§9), explicit nulls of the SDK-era sample included."""
    user_name = user_name or f"{unique('user')}@contoso.com"
    body = {
        "schemas": [USER, ENTERPRISE],
        "externalId": str(uuid.uuid4()),
        "userName": user_name,
        "active": True,
        "emails": [{"primary": True, "type": "work", "value": user_name}],
        "meta": {"resourceType": "User"},
        "name": {"formatted": "Ryan Leenay", "familyName": "Leenay", "givenName": "Ryan"},
        "roles": [],
        "addresses": None,
        "phoneNumbers": None,
        "title": None,
    }
    body.update(extra)
    return body


def create_user(scim, **extra) -> dict:
    response = scim.post("/Users", json=entra_user(**extra))
    assert response.status_code == 201, response.text
    return response.json()


def create_group(scim, name: str | None = None) -> dict:
    body = {
        "schemas": [GROUP, "http://schemas.microsoft.com/2006/11/ResourceManagement/ADSCIM/2.0/Group"],
        "externalId": str(uuid.uuid4()),
        "displayName": name or unique("group"),
        "meta": {"resourceType": "Group"},
    }
    response = scim.post("/Groups", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def patch(scim, path: str, *operations: dict, operations_first: bool = False):
    body = {"Operations": list(operations), "schemas": [PATCH_OP]} if operations_first else \
        {"schemas": [PATCH_OP], "Operations": list(operations)}
    return scim.patch(path, json=body)


def query(scim, endpoint: str, filter_text: str, **params) -> dict:
    response = scim.get(endpoint, params={"filter": filter_text, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["schemas"] == [LIST]
    return body


def assert_scim_error(response, status: int, scim_type: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/scim+json")
    body = response.json()
    assert body["schemas"] == [ERROR]
    assert body["status"] == str(status)
    if scim_type:
        assert body.get("scimType") == scim_type
    assert "Traceback" not in response.text
    return body


# --------------------------------------------------------------------------- Test Connection


def test_test_connection_query_for_a_random_guid_answers_an_empty_list_response(scim):
    body = query(scim, "/Users", f'userName eq "{uuid.uuid4()}"')
    assert body["totalResults"] == 0
    assert body["Resources"] == []
    assert body["startIndex"] == 1


def test_test_connection_query_accepts_the_flag_in_the_tenant_url(scim):
    response = scim.get("/Users?aadOptscim062020", params={"filter": f'externalId eq "{uuid.uuid4()}"'})
    assert response.status_code == 200
    assert response.json()["totalResults"] == 0


# --------------------------------------------------------------------------- users


def test_create_user_answers_201_with_id_location_etag_and_meta(scim):
    response = scim.post("/Users", json=entra_user())
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("application/scim+json")
    user = response.json()
    assert user["id"]
    assert response.headers["Location"].endswith(f"/scim/Users/{user['id']}")
    assert user["meta"]["location"] == response.headers["Location"]
    assert user["meta"]["resourceType"] == "User"
    assert user["meta"]["created"] and user["meta"]["lastModified"]
    assert response.headers["ETag"] == user["meta"]["version"]
    assert user["name"]["givenName"] == "Ryan"
    assert "addresses" not in user and "title" not in user  # explicit nulls are skipped
    assert user["active"] is True


def test_a_forwarded_host_or_port_the_client_sends_does_not_rename_the_server(scim):
    """Only the gateway's X-Forwarded-* are trusted: a client's own X-Forwarded-Host would put
    its server's name in every Location and meta.location the app answers."""
    spoof = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Port": "4444"}
    created = scim.post("/Users", json=entra_user(), headers=spoof)
    assert created.status_code == 201
    read = scim.get(f"/Users/{created.json()['id']}", headers=spoof)
    for location in (created.headers["Location"], created.json()["meta"]["location"],
                     read.json()["meta"]["location"]):
        assert location.startswith(str(scim.base_url).rstrip("/")), location
        assert "evil.example" not in location and "4444" not in location


def test_created_user_is_readable_at_once_by_id_and_by_the_matching_query(scim):
    user = create_user(scim)
    got = scim.get(f"/Users/{user['id']}")
    assert got.status_code == 200
    assert got.json()["userName"] == user["userName"]
    found = query(scim, "/Users", f'userName eq "{user["userName"]}"')
    assert found["totalResults"] == 1
    assert found["Resources"][0]["id"] == user["id"]


def test_duplicate_user_name_in_another_case_is_409_uniqueness(scim):
    user = create_user(scim)
    response = scim.post("/Users", json=entra_user(user["userName"].upper()))
    assert_scim_error(response, 409, "uniqueness")


def test_users_of_two_domains_sharing_a_mail_nickname_as_external_id_both_provision_and_both_match(scim):
    """Entra maps mailNickname to externalId: john@contoso and john@fabrikam both send "john"."""
    nickname = unique("john")
    contoso = create_user(scim, user_name=f"{nickname}@contoso.example", externalId=nickname)
    fabrikam = create_user(scim, user_name=f"{nickname}@fabrikam.example", externalId=nickname)
    found = query(scim, "/Users", f'externalId eq "{nickname}"')
    assert sorted(r["id"] for r in found["Resources"]) == sorted([contoso["id"], fabrikam["id"]])
    assert found["totalResults"] == 2


def test_get_unknown_user_is_404_scim_error(scim):
    assert_scim_error(scim.get(f"/Users/{uuid.uuid4()}"), 404)


def test_filter_user_name_ignores_the_case_of_value_and_attribute_name(scim):
    user = create_user(scim)
    for text in (f'userName eq "{user["userName"].upper()}"', f'USERNAME EQ "{user["userName"]}"'):
        assert [r["id"] for r in query(scim, "/Users", text)["Resources"]] == [user["id"]]


def test_filter_external_id_quoted_and_sdk_era_unquoted(scim):
    user = create_user(scim)
    assert query(scim, "/Users", f'externalId eq "{user["externalId"]}"')["totalResults"] == 1
    assert query(scim, "/Users", f'externalId eq {user["externalId"]}')["totalResults"] == 1


def test_filter_by_work_email_value(scim):
    user = create_user(scim)
    text = f'emails[type eq "work"].value eq "{user["userName"]}"'
    assert [r["id"] for r in query(scim, "/Users", text)["Resources"]] == [user["id"]]


def test_filter_value_arriving_form_encoded_with_plus_signs(scim):
    user = create_user(scim)
    encoded = user["userName"].replace("@", "%40")
    response = scim.get(f'/Users?filter=userName+eq+"{encoded}"')
    assert response.status_code == 200
    assert response.json()["totalResults"] == 1


def test_update_user_multi_valued_without_flag(scim):
    user = create_user(scim)
    new_mail = f"{unique('mail')}@contoso.com"
    response = patch(scim, f"/Users/{user['id']}",
                     {"op": "Replace", "path": 'emails[type eq "work"].value', "value": new_mail},
                     {"op": "Replace", "path": "name.familyName", "value": "updatedFamilyName"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["emails"][0]["value"] == new_mail
    assert body["name"]["familyName"] == "updatedFamilyName"
    assert query(scim, "/Users", f'emails[type eq "work"].value eq "{new_mail}"')["totalResults"] == 1


def test_update_user_name_single_valued(scim):
    user = create_user(scim)
    new_name = f"{unique('renamed')}@contoso.com"
    response = patch(scim, f"/Users/{user['id']}", {"op": "Replace", "path": "userName", "value": new_name})
    assert response.status_code == 200
    assert response.json()["userName"] == new_name
    assert query(scim, "/Users", f'userName eq "{new_name}"')["totalResults"] == 1
    assert query(scim, "/Users", f'userName eq "{user["userName"]}"')["totalResults"] == 0


def test_renaming_onto_another_users_name_is_409_and_changes_nothing(scim):
    first, second = create_user(scim), create_user(scim)
    response = patch(scim, f"/Users/{second['id']}",
                     {"op": "replace", "path": "userName", "value": first["userName"].title()})
    assert_scim_error(response, 409, "uniqueness")
    assert scim.get(f"/Users/{second['id']}").json()["userName"] == second["userName"]


def test_disable_user_without_flag_sends_the_string_False_and_the_user_stays_readable(scim):
    user = create_user(scim)
    response = patch(scim, f"/Users/{user['id']}", {"op": "Replace", "path": "active", "value": "False"},
                     operations_first=True)
    assert response.status_code == 200
    assert response.json()["active"] is False
    assert scim.get(f"/Users/{user['id']}").json()["active"] is False
    found = query(scim, "/Users", f'userName eq "{user["userName"]}"')
    assert found["Resources"][0]["active"] is False


def test_disable_and_restore_user_with_flag_sends_booleans(scim):
    user = create_user(scim)
    assert patch(scim, f"/Users/{user['id']}", {"op": "replace", "path": "active", "value": False}).json()[
        "active"] is False
    assert patch(scim, f"/Users/{user['id']}", {"op": "replace", "path": "active", "value": True}).json()[
        "active"] is True


def test_replace_several_attributes_with_flag_is_one_pathless_replace_with_dotted_and_urn_keys(scim):
    user = create_user(scim)
    new_mail = f"{unique('mail')}@contoso.com"
    response = patch(
        scim, f"/Users/{user['id']}",
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": new_mail},
        {"op": "replace", "value": {
            "displayName": "Ryan L", "name.givenName": "Bryan", "name.familyName": "Leen",
            f"{ENTERPRISE}:employeeNumber": "E-1001",
        }},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["displayName"] == "Ryan L"
    assert body["name"]["givenName"] == "Bryan" and body["name"]["familyName"] == "Leen"
    assert body[ENTERPRISE]["employeeNumber"] == "E-1001"
    assert body["emails"][0]["value"] == new_mail


@pytest.mark.parametrize("op", ["Add", "add"])
def test_add_single_valued_string_in_both_dialects(scim, op):
    user = create_user(scim)
    response = patch(scim, f"/Users/{user['id']}", {"op": op, "path": "nickName", "value": "Babs"})
    assert response.status_code == 200
    assert response.json()["nickName"] == "Babs"


@pytest.mark.parametrize("op", ["Replace", "Add"])
def test_enterprise_attributes_by_urn_path(scim, op):
    user = create_user(scim)
    response = patch(scim, f"/Users/{user['id']}",
                     {"op": op, "path": f"{ENTERPRISE}:employeeNumber", "value": "701984"},
                     {"op": op, "path": f"{ENTERPRISE}:department", "value": "Sales"})
    assert response.status_code == 200, response.text
    assert response.json()[ENTERPRISE] == {"employeeNumber": "701984", "department": "Sales"}
    assert query(scim, "/Users", f'{ENTERPRISE}:department eq "sales" and id eq "{user["id"]}"')["totalResults"] == 1


def test_add_on_a_typed_path_creates_the_missing_typed_entry(scim):
    user = create_user(scim)
    response = patch(scim, f"/Users/{user['id']}",
                     {"op": "Add", "path": 'addresses[type eq "work"].formatted', "value": "1 Main St"},
                     {"op": "Add", "path": 'phoneNumbers[type eq "mobile"].value', "value": "+1 555 0100"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"type": "work", "formatted": "1 Main St"}.items() <= body["addresses"][0].items()
    assert {"type": "mobile", "value": "+1 555 0100"}.items() <= body["phoneNumbers"][0].items()


def test_capitalised_sub_attribute_names_from_the_default_mapping(scim):
    user = create_user(scim)
    response = patch(scim, f"/Users/{user['id']}",
                     {"op": "Add", "path": 'emails[type eq "other"].Value', "value": "other@contoso.com"},
                     {"op": "Add", "path": 'addresses[type eq "other"].Formatted', "value": "2 Side St"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert any(e.get("type") == "other" and e.get("value") == "other@contoso.com" for e in body["emails"])
    assert any(a.get("type") == "other" and a.get("formatted") == "2 Side St" for a in body["addresses"])


def test_clearing_an_attribute_with_empty_string_then_null_reads_back_empty(scim):
    user = create_user(scim, title="Engineer")
    assert patch(scim, f"/Users/{user['id']}", {"op": "replace", "path": "title", "value": ""}).status_code == 200
    assert "title" not in scim.get(f"/Users/{user['id']}").json()
    patch(scim, f"/Users/{user['id']}", {"op": "replace", "path": "title", "value": "Lead"})
    assert patch(scim, f"/Users/{user['id']}", {"op": "replace", "path": "title", "value": None}).status_code == 200
    assert "title" not in scim.get(f"/Users/{user['id']}").json()


def test_roles_added_as_json_encoded_strings_are_kept_as_sent(scim):
    user = create_user(scim)
    role = '{"id":"7a7f","value":"Admin","displayName":"Admin"}'
    response = patch(scim, f"/Users/{user['id']}", {"op": "Add", "path": "roles", "value": [{"value": role}]})
    assert response.status_code == 200, response.text
    assert response.json()["roles"][0]["value"] == role


# --------------------------------------------------------------------------- manager


def test_manager_set_as_bare_string_id_reads_back_as_a_complex_value(scim):
    manager, user = create_user(scim), create_user(scim)
    response = patch(scim, f"/Users/{user['id']}",
                     {"op": "Add", "path": f"{ENTERPRISE}:manager", "value": manager["id"]})
    assert response.status_code == 200, response.text
    got = scim.get(f"/Users/{user['id']}").json()
    assert got[ENTERPRISE]["manager"]["value"] == manager["id"]


def test_manager_reference_check_query_with_attributes_id(scim):
    manager, user = create_user(scim), create_user(scim)
    patch(scim, f"/Users/{user['id']}", {"op": "Add", "path": f"{ENTERPRISE}:manager", "value": manager["id"]})
    body = query(scim, "/Users", f'id eq "{user["id"]}" and manager eq "{manager["id"]}"', attributes="id")
    assert body["totalResults"] == 1
    assert set(body["Resources"][0]) <= {"id", "schemas"}
    other = create_user(scim)
    assert query(scim, "/Users", f'id eq "{user["id"]}" and manager eq "{other["id"]}"')["totalResults"] == 0


def test_manager_replace_then_clear_with_empty_value_as_the_validator_does(scim):
    first, second, user = create_user(scim), create_user(scim), create_user(scim)
    path = f"/Users/{user['id']}"
    assert patch(scim, path, {"op": "replace", "path": f"{ENTERPRISE}:manager",
                              "value": {"value": first["id"]}}).status_code == 200
    patch(scim, path, {"op": "replace", "path": f"{ENTERPRISE}:manager", "value": {"value": second["id"]}})
    assert scim.get(path).json()[ENTERPRISE]["manager"]["value"] == second["id"]
    assert patch(scim, path, {"op": "replace", "path": f"{ENTERPRISE}:manager",
                              "value": {"value": ""}}).status_code == 200
    assert "manager" not in scim.get(path).json().get(ENTERPRISE, {})


def test_manager_removed_with_a_value_filter_without_urn(scim):
    manager, user = create_user(scim), create_user(scim)
    path = f"/Users/{user['id']}"
    patch(scim, path, {"op": "Add", "path": f"{ENTERPRISE}:manager", "value": manager["id"]})
    response = patch(scim, path, {"op": "Remove", "path": f'manager[value eq "{manager["id"]}"]'})
    assert response.status_code == 200, response.text
    assert "manager" not in scim.get(path).json().get(ENTERPRISE, {})


# --------------------------------------------------------------------------- delete


def test_delete_user_is_204_then_404_and_gone_from_queries(scim):
    user = create_user(scim)
    assert scim.delete(f"/Users/{user['id']}").status_code == 204
    assert_scim_error(scim.delete(f"/Users/{user['id']}"), 404)
    assert_scim_error(scim.get(f"/Users/{user['id']}"), 404)
    assert query(scim, "/Users", f'userName eq "{user["userName"]}"')["totalResults"] == 0


def test_delete_of_a_never_existing_user_is_404(scim):
    assert_scim_error(scim.delete(f"/Users/{uuid.uuid4()}"), 404)


# --------------------------------------------------------------------------- groups


def test_create_group_with_the_adscim_schema_uri_answers_201_with_empty_members(scim):
    group = create_group(scim)
    assert group["id"]
    assert group["members"] == []
    assert group["meta"]["resourceType"] == "Group"


def test_groups_sharing_a_display_name_both_provision_and_entra_matches_them_by_external_id(scim):
    """Tenants hold several groups named "Marketing"; Entra then matches objectId → externalId."""
    name = unique("Marketing")
    first, second = create_group(scim, name), create_group(scim, name.upper())
    assert [r["id"] for r in query(scim, "/Groups", f'displayName eq "{name}"', excludedAttributes="members")[
        "Resources"]] == [first["id"], second["id"]]
    matched = query(scim, "/Groups", f'externalId eq "{second["externalId"]}"', excludedAttributes="members")
    assert [r["id"] for r in matched["Resources"]] == [second["id"]]


def test_duplicate_group_display_name_in_another_case_is_409_where_the_app_enforces_uniqueness(acme):
    """The session stack's acme app sets SCIM_GROUP_DISPLAY_NAME_UNIQUENESS=acme=server."""
    group = acme.post("/acme/Groups", json={"schemas": [GROUP], "displayName": unique("acme-group")}).json()
    response = acme.post("/acme/Groups", json={"schemas": [GROUP], "displayName": group["displayName"].upper()})
    assert_scim_error(response, 409, "uniqueness")


def test_get_group_excluding_members_and_filter_by_display_name_any_case(scim):
    group = create_group(scim)
    user = create_user(scim)
    patch(scim, f"/Groups/{group['id']}", {"op": "Add", "path": "members", "value": [{"$ref": None, "value": user["id"]}]})
    got = scim.get(f"/Groups/{group['id']}", params={"excludedAttributes": "members"})
    assert got.status_code == 200
    assert "members" not in got.json()
    body = query(scim, "/Groups", f'displayName eq "{group["displayName"].upper()}"', excludedAttributes="members")
    assert body["totalResults"] == 1
    assert "members" not in body["Resources"][0]


def test_update_group_display_name_answers_204(scim):
    group = create_group(scim)
    new_name = unique("renamed-group")
    response = patch(scim, f"/Groups/{group['id']}", {"op": "Replace", "path": "displayName", "value": new_name})
    assert response.status_code == 204
    assert scim.get(f"/Groups/{group['id']}").json()["displayName"] == new_name


def test_validator_pathless_replace_of_group_display_name(scim):
    group = create_group(scim)
    new_name = unique("renamed-group")
    assert patch(scim, f"/Groups/{group['id']}", {"op": "replace", "value": {"displayName": new_name}}).status_code == 204
    assert scim.get(f"/Groups/{group['id']}").json()["displayName"] == new_name


def test_add_several_members_in_one_patch_and_re_adding_one_succeeds(scim):
    group = create_group(scim)
    users = [create_user(scim) for _ in range(3)]
    response = patch(scim, f"/Groups/{group['id']}",
                     {"op": "Add", "path": "members", "value": [{"$ref": None, "value": u["id"]} for u in users]})
    assert response.status_code == 204, response.text
    again = patch(scim, f"/Groups/{group['id']}",
                  {"op": "Add", "path": "members", "value": [{"$ref": None, "value": users[0]["id"]}]})
    assert again.status_code == 204
    members = scim.get(f"/Groups/{group['id']}").json()["members"]
    assert sorted(m["value"] for m in members) == sorted(u["id"] for u in users)


def test_remove_member_without_flag_sends_a_value_array(scim):
    group = create_group(scim)
    keep, drop = create_user(scim), create_user(scim)
    patch(scim, f"/Groups/{group['id']}", {"op": "Add", "path": "members",
                                            "value": [{"value": keep["id"]}, {"value": drop["id"]}]})
    response = patch(scim, f"/Groups/{group['id']}",
                     {"op": "Remove", "path": "members", "value": [{"$ref": None, "value": drop["id"]}]})
    assert response.status_code == 204, response.text
    assert [m["value"] for m in scim.get(f"/Groups/{group['id']}").json()["members"]] == [keep["id"]]


def test_remove_member_with_flag_sends_a_filtered_path(scim):
    group = create_group(scim)
    keep, drop = create_user(scim), create_user(scim)
    patch(scim, f"/Groups/{group['id']}", {"op": "add", "path": "members",
                                            "value": [{"value": keep["id"]}, {"value": drop["id"]}]})
    response = patch(scim, f"/Groups/{group['id']}", {"op": "remove", "path": f'members[value eq "{drop["id"]}"]'})
    assert response.status_code == 204, response.text
    assert [m["value"] for m in scim.get(f"/Groups/{group['id']}").json()["members"]] == [keep["id"]]


def test_membership_reference_check_query(scim):
    group, user = create_group(scim), create_user(scim)
    text = f'id eq "{group["id"]}" and members eq "{user["id"]}"'
    assert query(scim, "/Groups", text, attributes="id")["totalResults"] == 0
    patch(scim, f"/Groups/{group['id']}", {"op": "Add", "path": "members", "value": [{"value": user["id"]}]})
    body = query(scim, "/Groups", text, attributes="id")
    assert body["totalResults"] == 1
    assert "members" not in body["Resources"][0]


def test_validator_adds_members_with_a_replace(scim):
    group, user = create_group(scim), create_user(scim)
    response = patch(scim, f"/Groups/{group['id']}",
                     {"op": "replace", "path": "members", "value": [{"value": user["id"]}]})
    assert response.status_code == 204, response.text
    assert [m["value"] for m in scim.get(f"/Groups/{group['id']}").json()["members"]] == [user["id"]]


def test_disabled_user_keeps_its_group_memberships(scim):
    group, user = create_group(scim), create_user(scim)
    patch(scim, f"/Groups/{group['id']}", {"op": "Add", "path": "members", "value": [{"value": user["id"]}]})
    patch(scim, f"/Users/{user['id']}", {"op": "Replace", "path": "active", "value": "False"})
    patch(scim, f"/Users/{user['id']}", {"op": "Replace", "path": "active", "value": "True"})
    assert [m["value"] for m in scim.get(f"/Groups/{group['id']}").json()["members"]] == [user["id"]]
    assert [g["value"] for g in scim.get(f"/Users/{user['id']}").json()["groups"]] == [group["id"]]


def test_deleting_a_member_user_removes_it_from_its_groups(scim):
    group, user = create_group(scim), create_user(scim)
    patch(scim, f"/Groups/{group['id']}", {"op": "Add", "path": "members", "value": [{"value": user["id"]}]})
    scim.delete(f"/Users/{user['id']}")
    assert scim.get(f"/Groups/{group['id']}").json()["members"] == []


def test_adding_an_unknown_member_is_400_and_changes_nothing(scim):
    group, user = create_group(scim), create_user(scim)
    response = patch(scim, f"/Groups/{group['id']}", {"op": "Add", "path": "members",
                                                       "value": [{"value": user["id"]}, {"value": str(uuid.uuid4())}]})
    assert_scim_error(response, 400, "invalidValue")
    assert scim.get(f"/Groups/{group['id']}").json()["members"] == []


def test_delete_group_is_204_then_404(scim):
    group = create_group(scim)
    assert scim.delete(f"/Groups/{group['id']}").status_code == 204
    assert_scim_error(scim.delete(f"/Groups/{group['id']}"), 404)


# --------------------------------------------------------------------------- paging, discovery


def test_pagination_over_eleven_users_in_pages_of_five(scim):
    prefix = unique("page")
    ids = [create_user(scim, user_name=f"{prefix}-{i:02d}@contoso.com")["id"] for i in range(11)]
    seen = []
    for start in (1, 6, 11):
        body = query(scim, "/Users", f'userName sw "{prefix}"', startIndex=start, count=5)
        assert body["startIndex"] == start
        assert body["totalResults"] == 11
        assert body["itemsPerPage"] == len(body["Resources"]) == (5 if start < 11 else 1)
        seen += [r["id"] for r in body["Resources"]]
    assert sorted(seen) == sorted(ids)


def test_schemas_is_a_list_response_with_user_enterprise_and_group(scim):
    response = scim.get("/Schemas")
    assert response.status_code == 200
    body = response.json()
    assert body["schemas"] == [LIST]
    ids = {s["id"] for s in body["Resources"]}
    assert {USER, ENTERPRISE, GROUP} <= ids
    user_schema = next(s for s in body["Resources"] if s["id"] == USER)
    user_name = next(a for a in user_schema["attributes"] if a["name"] == "userName")
    assert user_name["mutability"] == "readWrite" and user_name["uniqueness"] == "server"
    assert "null" not in response.text


def test_resource_types_and_service_provider_config(scim):
    types = scim.get("/ResourceTypes").json()
    assert {r["id"] for r in types["Resources"]} == {"User", "Group"}
    config = scim.get("/ServiceProviderConfig").json()
    assert config["patch"]["supported"] is True
    assert config["filter"]["supported"] is True


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize("method", ["get", "post", "patch", "delete"])
def test_missing_or_wrong_token_is_401_with_www_authenticate(stack, method):
    with stack.client(token="wrong") as client:
        for c in (client,):
            response = getattr(c, method)(f"/Users/{uuid.uuid4()}") if method != "post" else c.post("/Users", json=entra_user())
            body = assert_scim_error(response, 401)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert "test-token" not in str(body)
    import httpx

    response = httpx.get(f"{stack.url}/Users")
    assert_scim_error(response, 401)


# --------------------------------------------------------------------------- several SCIM apps


def test_each_scim_app_keeps_its_own_users_and_names(scim, acme):
    user = create_user(scim)
    acme_body = entra_user(user["userName"], externalId=user["externalId"])
    created = acme.post("/acme/Users", json=acme_body)
    assert created.status_code == 201, created.text  # the same userName and externalId, another app
    acme_user = created.json()
    assert created.headers["Location"].endswith(f"/scim/acme/Users/{acme_user['id']}")
    assert_scim_error(acme.get(f"/acme/Users/{user['id']}"), 404)
    assert_scim_error(scim.get(f"/Users/{acme_user['id']}"), 404)
    assert_scim_error(acme.delete(f"/acme/Users/{user['id']}"), 404)
    assert [r["id"] for r in query(acme, "/acme/Users", f'userName eq "{user["userName"]}"')["Resources"]] == [
        acme_user["id"]]


def test_a_group_cannot_take_a_member_from_another_app(scim, acme):
    user = create_user(scim)
    group = acme.post("/acme/Groups", json={"schemas": [GROUP], "displayName": unique("acme-group")}).json()
    response = patch(acme, f"/acme/Groups/{group['id']}", {"op": "add", "path": "members",
                                                           "value": [{"value": user["id"]}]})
    assert_scim_error(response, 400, "invalidValue")


def test_an_app_that_is_not_configured_is_refused(scim):
    # No credential belongs to an app that does not exist: 401 before anything is looked up.
    assert_scim_error(scim.get("/nosuchapp/Users"), 401)
    assert_scim_error(scim.post("/nosuchapp/Users", json=entra_user()), 401)
