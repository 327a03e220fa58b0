"""The write API: POST/PUT/PATCH/DELETE on /Users and /Groups (RFC 7644 §3.3, §3.5, §3.6).

Each handler authenticates (before_request), parses and validates the body, assigns the
id of a new resource, enqueues one write job, waits for its result and answers it. The
front never touches the store: whatever the worker answered is what the client sees.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, Request, Response, current_app, g, request

from libs.bus.messages import WriteJob
from libs.bus.queues import Bus
from libs.config import Settings
from libs.scim.errors import MethodNotAllowed, NotFound, NotImplementedOperation, from_body
from libs.scim import passwords
from libs.scim.patch import parse_patch_request
from libs.scim.render import etag, parse_attribute_list, project, with_location
from libs.scim.schemas import BY_ENDPOINT, ResourceSchema
from libs.scim.undeclared import Policy
from libs.scim.validate import validate_resource
from libs.security.limits import check_json, check_members
from libs.web.errors import render_error
from libs.web.request import base_url, client_request_id, current_request, json_body, request_id, resolve_app
from libs.web.responses import scim_response
from services.front import bulk

bp = Blueprint("writes", __name__)


def _settings() -> Settings:
    return current_app.extensions["scim.settings"]


def _bus() -> Bus:
    return current_app.extensions["scim.bus"]


_READ_ONLY_ENDPOINTS = ("serviceproviderconfig", "schemas", "resourcetypes")


def _schema(endpoint: str) -> ResourceSchema:
    if endpoint.lower() in _READ_ONLY_ENDPOINTS:
        raise MethodNotAllowed(f"/{endpoint} is read-only: use GET.")
    if endpoint.lower() == "me":
        raise NotImplementedOperation("/Me is not supported: a bearer token names no SCIM user.")
    schema = BY_ENDPOINT.get(endpoint.lower())
    if schema is None:
        raise NotFound(f"No resource endpoint /{endpoint[:100]}.")
    return schema


def _selection(schema: ResourceSchema) -> tuple[list, list]:
    args = request.args
    if not args:  # a write's usual URL: werkzeug raises and catches a KeyError per missing name
        return [], []
    return (parse_attribute_list(args.get("attributes"), schema),
            parse_attribute_list(args.get("excludedAttributes"), schema))


def _body(settings: Settings, *, patch: bool = False):
    """The JSON body within the shape limits (depth, array sizes, members)."""
    body = check_json(json_body(settings.max_body_bytes), settings)
    check_members(body, settings, patch=patch)
    return body


def _audit_meta(req: Request) -> dict[str, str | None]:
    """Who asked, for the audit row the worker writes: never the secret itself."""
    principal = g.get("scim_principal")
    return {"token_name": principal.name if principal else None, "client_ip": req.remote_addr,
            "client_request_id": client_request_id(req)}


def _run(app: str | None, schema: ResourceSchema, op: str, resource_id: str, body=None,
         meta: dict | None = None, selection: tuple[list, list] | None = None) -> Response:
    extensions = current_app.extensions
    settings: Settings = extensions["scim.settings"]
    req = current_request()
    attributes, excluded = selection or _selection(schema)
    job = WriteJob(
        job_id=uuid.uuid4().hex, op=op, app=resolve_app(app, settings.default_app, settings.app_names),
        resource_type=schema.name, resource_id=resource_id, body=body,
        if_match=req.headers.get("If-Match"), request_id=request_id(), meta={**_audit_meta(req), **(meta or {})},
    )
    result = extensions["scim.bus"].apply(job, settings.write_timeout)
    if result.status >= 400:
        return render_error(from_body(result.body or {"status": result.status}))
    headers: dict[str, str] = {}
    if result.version is not None and op != "delete":
        headers["ETag"] = etag(result.version)
    body = result.body
    if body is not None:
        body = with_location(body, base_url(app), schema)
        if op == "create":
            headers["Location"] = body["meta"]["location"]
        body = project(body, attributes, excluded)
    return scim_response(body, result.status, headers)


def _resource(settings: Settings, schema: ResourceSchema) -> dict:
    """The validated body of a POST or PUT, its password hashed, undeclared attributes
    ignored and reported or rejected (SCIM_UNKNOWN_ATTRIBUTES)."""
    policy = Policy(settings.unknown_attributes)
    body = validate_resource(_body(settings), schema, max_value_length=settings.max_value_length, undeclared=policy)
    policy.report()
    return passwords.hash_in_resource(body)


@bp.post("/<endpoint>")
def create(endpoint: str, app: str | None = None) -> Response:
    if endpoint.lower() == "bulk":
        return _bulk(app)
    schema = _schema(endpoint)
    body = _resource(_settings(), schema)
    return _run(app, schema, "create", str(uuid.uuid4()), body, meta={"password_hashed": True})


@bp.put("/<endpoint>/<resource_id>")
def replace(endpoint: str, resource_id: str, app: str | None = None) -> Response:
    schema = _schema(endpoint)
    body = _resource(_settings(), schema)
    return _run(app, schema, "replace", resource_id, body, meta={"password_hashed": True})


@bp.patch("/<endpoint>/<resource_id>")
def patch(endpoint: str, resource_id: str, app: str | None = None) -> Response:
    schema = _schema(endpoint)
    settings = _settings()
    body = _body(settings, patch=True)
    parse_patch_request(body, max_operations=settings.max_operations)  # reject bad syntax before the queue
    attributes, excluded = _selection(schema)
    # Groups answer 204 (Entra's advice: never a member list) unless the client names attributes
    # or the administrator chose 200; the member list is loaded only when the answer shows it.
    answer = schema.name != "Group" or settings.group_patch_status == 200 or bool(attributes or excluded)
    members = not any(k.lower() == "members" and s is None for k, s in excluded) and \
        (not attributes or any(k.lower() == "members" for k, _ in attributes))
    return _run(app, schema, "patch", resource_id, passwords.hash_in_patch(body, schema),
                meta={"answer": answer, "members": members, "password_hashed": True},
                selection=(attributes, excluded))


@bp.delete("/<endpoint>/<resource_id>")
def delete(endpoint: str, resource_id: str, app: str | None = None) -> Response:
    return _run(app, _schema(endpoint), "delete", resource_id)


@bp.route("/<endpoint>", methods=["PUT", "PATCH", "DELETE"])
def collection_method_not_allowed(endpoint: str, app: str | None = None) -> Response:
    _schema(endpoint)  # /Me → 501, a discovery endpoint → 405 read-only, an unknown one → 404
    raise MethodNotAllowed(f"{request.method} needs a resource id: /{endpoint[:100]}/<id>.")


def _bulk(app: str | None) -> Response:
    """Bulk operations (RFC 7644 §3.7); see ``services.front.bulk``."""
    settings = _settings()
    operations, fail_on_errors = bulk.parse_request(check_json(json_body(settings.bulk_max_payload_bytes), settings),
                                                    settings)
    app_key = resolve_app(app, settings.default_app, settings.app_names)
    planned = bulk.plan(operations, settings, app_key, request_id(), _audit_meta(current_request()))
    bulk.run(_bus(), planned, fail_on_errors, settings.write_timeout)
    return scim_response(bulk.response(planned, base_url(app)), 200)
