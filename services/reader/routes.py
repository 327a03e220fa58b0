"""The read API: GET by id, list/filter/page, ``POST /.search``, discovery (RFC 7644 §3.4, §4).

Filters are parsed to an AST and translated to SQL (``libs.store.query``); nothing is
evaluated by loading rows. ``excludedAttributes=members`` (Entra's group reads) never
loads a member.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Blueprint, Response, current_app, request

from libs.config import Settings
from libs.scim.errors import InvalidCount, InvalidCursor, InvalidFilter, InvalidSyntax, InvalidValue, MethodNotAllowed, \
    NotFound, NotImplementedOperation
from libs.scim.filter import parse_filter
from libs.scim.render import list_response, not_modified, parse_attribute_list, project, with_location
from libs.scim.schemas import BY_ENDPOINT, RESOURCE_TYPES, SEARCH_REQUEST, ResourceSchema
from libs.store.directory import DirectoryStore
from libs.security.limits import check_filter, check_json
from libs.web.request import base_url, json_body, resolve_app
from libs.web.responses import scim_response
from services.reader import discovery, reads
from services.reader.cursors import CursorCodec

bp = Blueprint("reads", __name__)


def _settings() -> Settings:
    return current_app.extensions["scim.settings"]


def _store() -> DirectoryStore:
    replicas = current_app.extensions.get("scim.replicas")
    if replicas is not None:  # issue 21: a replica that has the app's last write, else the primary
        return reads.routed_store(replicas, _app_key((request.view_args or {}).get("app")))
    return current_app.extensions["scim.store"]


def _app_key(app: str | None) -> str:
    settings = _settings()
    return resolve_app(app, settings.default_app, settings.app_names)


def _schema(endpoint: str) -> ResourceSchema:
    if endpoint.lower() == "me":
        raise NotImplementedOperation("/Me is not supported: a bearer token names no SCIM user.")
    if endpoint.lower() == "bulk":
        raise MethodNotAllowed("/Bulk takes POST only.")
    schema = BY_ENDPOINT.get(endpoint.lower())
    if schema is None:
        raise NotFound(f"No resource endpoint /{endpoint[:100]}.")
    return schema


_INTEGER = re.compile(r"[+-]?[0-9]{1,100}")
"""An integer as RFC 7644 writes one: ASCII digits. Python's ``int`` also reads ``1_0`` (10),
``٣`` (3), surrounding spaces, and from a /.search body ``true`` (1) and ``1.5`` (1)."""


def _integer(raw: Any) -> int | None:
    """``raw`` (a query string's text, or a /.search body's JSON value) as an integer, else None."""
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and _INTEGER.fullmatch(raw):
        return int(raw)
    return None


def _int_param(params: dict[str, Any], name: str, default: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    value = _integer(raw)
    if value is None:
        raise InvalidValue(f"{name} must be an integer, not {str(raw)[:50]!r}.")
    return value


def _wants(name: str, attributes: list, excluded: list) -> bool:
    """Whether the response needs a derived attribute (members, groups) at all."""
    if attributes:
        return any(key.lower() == name for key, _ in attributes)
    return not any(key.lower() == name and sub is None for key, sub in excluded)


def _query(app: str | None, schema: ResourceSchema, params: dict[str, Any]) -> Response:
    settings = _settings()
    app_key = resolve_app(app, settings.default_app, settings.app_names)
    check_filter(params.get("filter"), settings)  # issue 5: SCIM_MAX_FILTER_LENGTH
    node = _filter(params, settings)
    attributes = parse_attribute_list(_joined(params.get("attributes")), schema)
    excluded = parse_attribute_list(_joined(params.get("excludedAttributes")), schema)
    if "cursor" in params:
        return _cursor_page(app_key, schema, node, params, attributes, excluded, url=base_url(app))
    # Clamped: an OFFSET past 2**31 finds nothing anyway, and past 2**63 overflows the driver.
    start_index = min(max(1, _int_param(params, "startIndex", 1)), 2**31)
    count = min(max(0, _int_param(params, "count", settings.max_results)), settings.max_results)
    sort_order = str(params.get("sortOrder") or "ascending").lower()
    if sort_order not in ("ascending", "descending"):
        raise InvalidValue("sortOrder must be 'ascending' or 'descending'.")
    sort_by = params.get("sortBy") or None
    if sort_by is not None and not isinstance(sort_by, str):  # found by schemathesis: a 500
        raise InvalidValue("sortBy must be an attribute name.")
    total, docs = _store().search(
        app_key, schema, node, start_index=start_index, count=count, sort_by=sort_by,
        descending=sort_order == "descending",
        with_members=_wants("members", attributes, excluded), with_groups=_wants("groups", attributes, excluded),
        max_related=settings.max_page_members,
    )
    url = base_url(app)
    resources = [project(with_location(d, url, schema), attributes, excluded) for d in docs]
    return scim_response(list_response(resources, total, start_index))


def _filter(params: dict[str, Any], settings: Settings):
    """The parsed filter of a query, if any, within SCIM_MAX_FILTER_TERMS comparisons."""
    if params.get("filter") in (None, ""):
        return None
    return parse_filter(params["filter"], max_terms=settings.max_filter_terms)


def _cursor_page(app_key: str, schema: ResourceSchema, node, params: dict[str, Any], attributes: list,
                 excluded: list, *, url: str) -> Response:
    """One page of cursor paging (RFC 9865), in creation (key) order."""
    settings = _settings()
    if params.get("startIndex") not in (None, ""):
        raise InvalidValue("Use either cursor or startIndex paging, not both.")
    if params.get("sortBy"):
        raise InvalidValue("Cursor pages come in creation order; sortBy needs startIndex paging.")
    cursor = params.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise InvalidCursor()
    raw = params.get("count")
    count = settings.max_results if raw is None or raw == "" else _integer(raw)
    if count is None or count < 1:
        raise InvalidCount(f"count must be an integer from 1 to {settings.max_results}.")
    count = min(count, settings.max_results)
    codec: CursorCodec = current_app.extensions["scim.cursors"]
    digest = codec.query_digest(app_key, schema.name, params.get("filter"))
    after_pk = codec.open(cursor, digest) if cursor else 0
    total, docs, next_pk = _store().search_after(
        app_key, schema, node, after_pk=after_pk, count=count,
        with_members=_wants("members", attributes, excluded), with_groups=_wants("groups", attributes, excluded),
        max_related=settings.max_page_members)
    body = list_response([project(with_location(d, url, schema), attributes, excluded) for d in docs], total, 1)
    del body["startIndex"]
    if next_pk is not None:
        body["nextCursor"] = codec.issue(next_pk, digest)
    return scim_response(body)


def _joined(value: Any) -> str | None:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return value if value is None or isinstance(value, str) else str(value)


@bp.get("/<endpoint>")
def list_resources(endpoint: str, app: str | None = None) -> Response:
    if endpoint.lower() == "serviceproviderconfig":
        return scim_response(discovery.service_provider_config(_settings(), base_url(app), _app_key(app)))
    if endpoint.lower() == "schemas":
        docs = discovery.schemas(base_url(app), _settings(), _app_key(app))
        return scim_response(list_response(docs, len(docs), 1))
    if endpoint.lower() == "resourcetypes":
        docs = discovery.resource_types(base_url(app))
        return scim_response(list_response(docs, len(docs), 1))
    return _query(app, _schema(endpoint), request.args.to_dict())


@bp.get("/<endpoint>/<path:resource_id>")
def get_resource(endpoint: str, resource_id: str, app: str | None = None) -> Response:
    if endpoint.lower() in ("schemas", "resourcetypes"):
        docs = discovery.schemas(base_url(app), _settings(), _app_key(app)) if endpoint.lower() == "schemas" \
            else discovery.resource_types(base_url(app))
        for doc in docs:
            if doc["id"].lower() == resource_id.lower():
                return scim_response(doc)
        raise NotFound(f"No {endpoint} {resource_id[:200]!r}.")
    schema = _schema(endpoint)
    settings = _settings()
    app_key = resolve_app(app, settings.default_app, settings.app_names)
    attributes = parse_attribute_list(request.args.get("attributes"), schema)
    excluded = parse_attribute_list(request.args.get("excludedAttributes"), schema)
    doc = _store().get(app_key, schema, resource_id, with_members=_wants("members", attributes, excluded),
                       with_groups=_wants("groups", attributes, excluded))
    if doc is None:
        raise NotFound(f"{schema.name} {resource_id[:200]!r} not found.")
    version = doc["meta"]["version"]
    if not_modified(request.headers.get("If-None-Match") or "", version):
        return scim_response(None, 304, {"ETag": version})
    doc = project(with_location(doc, base_url(app), schema), attributes, excluded)
    return scim_response(doc, 200, {"ETag": version})


def _search_request() -> dict[str, Any]:
    body = check_json(json_body(_settings().max_body_bytes), _settings())
    schemas = body.get("schemas") if isinstance(body, dict) else None
    if not isinstance(schemas, list) or SEARCH_REQUEST not in schemas:
        raise InvalidSyntax(f"A search request needs schemas [{SEARCH_REQUEST!r}].")
    return body


@bp.post("/<endpoint>/.search")
def search(endpoint: str, app: str | None = None) -> Response:
    return _query(app, _schema(endpoint), _search_request())


@bp.post("/.search")
def search_all(app: str | None = None) -> Response:
    """``POST /.search`` at the root (RFC 7644 §3.4.3): every resource type, users first.

    A filter or attribute that one type does not define matches nothing of that type, as
    RFC 7644 §3.4.2.2 says of an unknown attribute; one page spans the types in order.
    """
    params = _search_request()
    settings = _settings()
    app_key = resolve_app(app, settings.default_app, settings.app_names)
    check_filter(params.get("filter"), settings)  # SCIM_MAX_FILTER_LENGTH, as at /Users/.search
    node = _filter(params, settings)
    start_index = min(max(1, _int_param(params, "startIndex", 1)), 2**31)
    count = min(max(0, _int_param(params, "count", settings.max_results)), settings.max_results)
    url = base_url(app)
    total, resources, skip = 0, [], start_index - 1
    budget, cut = settings.max_page_members, False  # members and groups the page may still render
    for schema in RESOURCE_TYPES.values():
        attributes = _lenient_attributes(params.get("attributes"), schema)
        excluded = _lenient_attributes(params.get("excludedAttributes"), schema)
        if params.get("attributes") and not attributes:
            attributes = [("id", None)]
        try:
            found, _ = _store().search(app_key, schema, node, count=0)
        except (InvalidFilter, InvalidValue):
            continue
        total += found
        if skip >= found:
            skip -= found
            continue
        want = count - len(resources)
        if want > 0 and not cut:
            _, docs = _store().search(
                app_key, schema, node, start_index=skip + 1, count=want,
                with_members=_wants("members", attributes, excluded), with_groups=_wants("groups", attributes, excluded),
                max_related=max(budget, 0))
            rendered = [len(d.get("members") or d.get("groups") or ()) for d in docs]
            if resources and rendered and rendered[0] > budget:
                docs, rendered = [], []  # only a page's first resource may pass the budget alone
            budget -= sum(rendered)
            cut = len(docs) < min(want, found - skip)  # shortened by the budget: no other type after it
            resources += [project(with_location(d, url, schema), attributes, excluded) for d in docs]
        skip = 0
    return scim_response(list_response(resources, total, start_index))


def _lenient_attributes(raw: Any, schema: ResourceSchema) -> list:
    out = []
    for item in (_joined(raw) or "").split(","):
        try:
            out += parse_attribute_list(item, schema)
        except InvalidValue:
            continue
    return out



