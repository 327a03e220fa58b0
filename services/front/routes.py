"""The write API: POST/PUT/PATCH/DELETE on /Users and /Groups (RFC 7644 §3.3, §3.5, §3.6).

Each handler authenticates (before_request), parses and validates the body, assigns the
id of a new resource, enqueues one write job, waits for its result and answers it. The
front never touches the store: whatever the worker answered is what the client sees.
"""

from __future__ import annotations

import uuid

from flask import Blueprint, Response, current_app, g, request

from libs.bus.messages import WriteJob
from libs.bus.queues import Bus
from libs.config import Settings
from libs.scim.errors import MethodNotAllowed, NotFound, NotImplementedOperation, from_body
from libs.scim.patch import parse_patch_request
from libs.scim.render import etag, with_location
from libs.scim.schemas import BY_ENDPOINT, ResourceSchema
from libs.scim.validate import validate_resource
from libs.security.limits import check_json, check_members
from libs.web.errors import render_error
from libs.web.request import base_url, json_body, resolve_app
from libs.web.responses import scim_response

bp = Blueprint("writes", __name__)


def _settings() -> Settings:
    return current_app.extensions["scim.settings"]


def _bus() -> Bus:
    return current_app.extensions["scim.bus"]


def _schema(endpoint: str) -> ResourceSchema:
    schema = BY_ENDPOINT.get(endpoint.lower())
    if schema is None:
        raise NotFound(f"No resource endpoint /{endpoint[:100]}.")
    return schema


def _request_id() -> str:
    return request.headers.get("X-Request-Id") or uuid.uuid4().hex


def _body(settings: Settings, *, patch: bool = False):
    """The JSON body within the shape limits of issue 5 (depth, array sizes, members)."""
    body = check_json(json_body(settings.max_body_bytes), settings)
    check_members(body, settings, patch=patch)
    return body


def _audit_meta() -> dict[str, str | None]:
    """Who asked, for the audit row the worker writes (issue 5): never the secret itself."""
    principal = g.get("scim_principal")
    return {"token_name": principal.name if principal else None, "client_ip": request.remote_addr}


def _run(app: str | None, schema: ResourceSchema, op: str, resource_id: str, body=None) -> Response:
    settings = _settings()
    job = WriteJob(
        job_id=uuid.uuid4().hex, op=op, app=resolve_app(app, settings.default_app, settings.app_names),
        resource_type=schema.name, resource_id=resource_id, body=body,
        if_match=request.headers.get("If-Match"), request_id=_request_id(), meta=_audit_meta(),
    )
    result = _bus().apply(job, settings.write_timeout)
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
    return scim_response(body, result.status, headers)


@bp.post("/<endpoint>")
def create(endpoint: str, app: str | None = None) -> Response:
    if endpoint.lower() == "bulk":
        raise NotImplementedOperation("Bulk operations are not supported yet (see /ServiceProviderConfig).")
    schema = _schema(endpoint)
    settings = _settings()
    body = validate_resource(_body(settings), schema, max_value_length=settings.max_value_length)
    return _run(app, schema, "create", str(uuid.uuid4()), body)


@bp.put("/<endpoint>/<resource_id>")
def replace(endpoint: str, resource_id: str, app: str | None = None) -> Response:
    schema = _schema(endpoint)
    settings = _settings()
    body = validate_resource(_body(settings), schema, max_value_length=settings.max_value_length)
    return _run(app, schema, "replace", resource_id, body)


@bp.patch("/<endpoint>/<resource_id>")
def patch(endpoint: str, resource_id: str, app: str | None = None) -> Response:
    schema = _schema(endpoint)
    settings = _settings()
    body = _body(settings, patch=True)
    parse_patch_request(body, max_operations=settings.max_operations)  # reject bad syntax before the queue
    return _run(app, schema, "patch", resource_id, body)


@bp.delete("/<endpoint>/<resource_id>")
def delete(endpoint: str, resource_id: str, app: str | None = None) -> Response:
    return _run(app, _schema(endpoint), "delete", resource_id)


@bp.route("/<endpoint>", methods=["PUT", "PATCH", "DELETE"])
def collection_method_not_allowed(endpoint: str, app: str | None = None) -> Response:
    raise MethodNotAllowed(f"{request.method} needs a resource id: /{endpoint[:100]}/<id>.")
