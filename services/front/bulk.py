"""``POST /Bulk`` (RFC 7644 §3.7): many writes in one request, ordered by their references.

The front assigns the id of every resource the request creates before anything is
enqueued, so a ``bulkId:<x>`` reference (a member, a manager, a path) is replaced by the
id it stands for. Each operation is validated here like a single write and becomes one
``WriteJob``; the jobs go through ``Bus.apply_in_order`` to the same worker code as single
writes, so each sees the ones before it.

Order (RFC 7644 §3.7.2): request order, except that an operation naming ``bulkId:<x>``
runs after the POST that creates ``<x>``, even when that POST comes later in the request
(a group listing a user created further down), and operations on one resource keep their
relative order. Among operations free to run, the earliest in the request goes first, so
a request without forward references runs exactly in its order. References that form a
cycle (``a`` names ``b`` and ``b`` names ``a``) cannot be ordered: each operation in or
after the cycle answers ``409`` (§3.7.1 allows it), and so does an operation whose
referenced POST failed (the id it names was never created). The response lists the
operations in request order.

``failOnErrors=n`` stops after the n-th error: jobs are submitted in runs of at most the
number of errors still allowed, so no job after the n-th error is ever enqueued; a run
also ends before an operation whose reference has no outcome yet.

Passwords are hashed here, each a deliberately slow argon2id hash: a request carrying more
than ``SCIM_BULK_MAX_PASSWORDS`` of them is 413 before any is hashed (issue 16).
"""

from __future__ import annotations

import heapq
import uuid
from dataclasses import dataclass, field
from typing import Any

from libs.bus.messages import WriteJob, WriteResult
from libs.bus.queues import Bus
from libs.config import Settings
from libs.scim import passwords
from libs.scim.errors import (Conflict, InvalidSyntax, InvalidValue, PayloadTooLarge, ScimError, TooManyRequests,
                               from_body)
from libs.scim.patch import parse_patch_request
from libs.scim.render import etag, with_location
from libs.scim.schemas import BY_ENDPOINT, ResourceSchema
from libs.scim.undeclared import Policy
from libs.scim.validate import validate_resource

BULK_REQUEST = "urn:ietf:params:scim:api:messages:2.0:BulkRequest"
BULK_RESPONSE = "urn:ietf:params:scim:api:messages:2.0:BulkResponse"

_METHODS = {"POST": "create", "PUT": "replace", "PATCH": "patch", "DELETE": "delete"}


@dataclass(eq=False)
class _Planned:
    """One operation of the request: its answer so far, and its job unless it already failed."""

    method: str
    bulk_id: str | None
    schema: ResourceSchema | None
    resource_id: str | None
    job: WriteJob | None = None
    error: ScimError | None = None
    result: WriteResult | None = None
    needs: dict[str, int] = field(default_factory=dict)
    """The bulkIds it names → the index of the POST creating each."""

    @property
    def failed(self) -> bool:
        return self.error is not None or (self.result is not None and self.result.status >= 400)


_PREFIX = "bulkId:"


def _references(value: Any) -> set[str]:
    """The bulkIds a value names anywhere (``"bulkId:<x>"`` strings, RFC 7644 §3.7.2)."""
    found: set[str] = set()
    stack = [value]
    while stack:
        current = stack.pop()
        if isinstance(current, str):
            if current.startswith(_PREFIX):
                found.add(current[len(_PREFIX):])
        elif isinstance(current, list):
            stack += current
        elif isinstance(current, dict):
            stack += current.values()
    return found


def _substitute(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, str):
        if value.startswith("bulkId:"):
            key = value[len("bulkId:"):]
            if key not in ids:
                raise InvalidValue(f"{value[:100]!r} names no POST operation of this request.")
            return ids[key]
        return value
    if isinstance(value, list):
        return [_substitute(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, ids) for k, v in value.items()}
    return value


def _parse_path(path: Any, ids: dict[str, str]) -> tuple[ResourceSchema, str | None]:
    if not isinstance(path, str) or not path.startswith("/"):
        raise InvalidSyntax("Each operation needs a path such as /Users or /Users/<id>.")
    parts = path.strip("/").split("/")
    if len(parts) > 2 or not parts[0]:
        raise InvalidSyntax(f"Unsupported bulk path {path[:200]!r}.")
    schema = BY_ENDPOINT.get(parts[0].lower())
    if schema is None:
        raise InvalidValue(f"No resource endpoint {parts[0][:100]!r}.")
    return schema, _substitute(parts[1], ids) if len(parts) == 2 else None


def parse_request(body: Any, settings: Settings) -> tuple[list[dict[str, Any]], int | None]:
    """The operations and ``failOnErrors`` of a BulkRequest; 400/413 for the request as a whole."""
    if not isinstance(body, dict) or BULK_REQUEST not in (body.get("schemas") or []):
        raise InvalidSyntax(f"A bulk request needs schemas [{BULK_REQUEST!r}].")
    operations = body.get("Operations")
    if not isinstance(operations, list) or not all(isinstance(o, dict) for o in operations):
        raise InvalidSyntax("Operations must be an array of objects.")
    if len(operations) > settings.bulk_max_operations:
        raise PayloadTooLarge(f"The request has {len(operations)} operations; the maximum is "
                              f"{settings.bulk_max_operations} (see /ServiceProviderConfig).")
    hashes = sum(_passwords(op) for op in operations)
    if hashes > settings.bulk_max_passwords:
        raise PayloadTooLarge(f"The request sets {hashes} passwords; the maximum is {settings.bulk_max_passwords} "
                              "per request (each costs the server a deliberately slow hash).")
    fail_on_errors = body.get("failOnErrors")
    if fail_on_errors is not None and (not isinstance(fail_on_errors, int) or isinstance(fail_on_errors, bool)
                                       or fail_on_errors < 1):
        raise InvalidValue("failOnErrors must be a positive integer.")
    return operations, fail_on_errors


def _passwords(op: dict[str, Any]) -> int:
    """The password values one operation carries (counted before anything is validated or hashed)."""
    path = op.get("path")
    schema = BY_ENDPOINT.get(path.strip("/").split("/")[0].lower()) if isinstance(path, str) else None
    if schema is None:
        return 0
    method = str(op.get("method", "")).upper()
    if method == "PATCH":
        return passwords.count_in_patch(op.get("data"), schema)
    return passwords.count_in_resource(op.get("data"), schema) if method in ("POST", "PUT") else 0


def plan(operations: list[dict[str, Any]], settings: Settings, app: str, request_id: str,
         audit: dict[str, Any] | None = None) -> list[_Planned]:
    """One job per valid operation; ``audit`` (who asked, from where) goes into every job's
    meta, so each write of a Bulk is audited as a single write is."""
    ids: dict[str, str] = {}
    creators: dict[str, int] = {}
    for index, op in enumerate(operations):
        if str(op.get("method", "")).upper() == "POST" and isinstance(op.get("bulkId"), str) and op["bulkId"]:
            if op["bulkId"] not in ids:
                ids[op["bulkId"]] = str(uuid.uuid4())
                creators[op["bulkId"]] = index
    planned: list[_Planned] = []
    for index, op in enumerate(operations):
        method = str(op.get("method", "")).upper()
        bulk_id = op.get("bulkId") if isinstance(op.get("bulkId"), str) else None
        item = _Planned(method, bulk_id, None, None)
        planned.append(item)
        try:
            if method == "POST" and bulk_id and creators.get(bulk_id) != index:
                raise InvalidValue(f"bulkId {bulk_id[:100]!r} is used by an earlier POST of this request: "
                                   "each must be unique (RFC 7644 §3.7).")
            item.job = _job(op, method, bulk_id, ids, settings, app, request_id, item, audit or {})
            named = _references(op.get("data")) | _references(str(op.get("path")).split("/"))
            item.needs = {ref: creators[ref] for ref in named if ref in creators}
        except TooManyRequests:
            raise  # no hashing slot: the whole request waits, nothing of it was queued yet
        except ScimError as exc:
            item.error = exc
    return planned


def order(planned: list[_Planned]) -> list[int]:
    """The indices of ``planned`` in the order to apply them (see the module docstring).

    A stable topological sort (Kahn's, taking the earliest operation that is free to run);
    the operations left over, in or after a cycle, get their 409 and come last."""
    after: dict[int, set[int]] = {i: set(p.needs.values()) if p.error is None else set()
                                  for i, p in enumerate(planned)}
    chains: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(planned):
        if p.error is None and p.schema is not None and p.resource_id is not None:
            chain = chains.setdefault((p.schema.name, p.resource_id), [])
            if p.method == "POST":  # it creates the resource: before whatever else this request does to it
                chain.insert(0, i)
            else:
                chain.append(i)
    for chain in chains.values():  # then one resource's operations keep their request order
        for before, i in zip(chain, chain[1:]):
            after[i].add(before)
    waiting = {i: len(deps) for i, deps in after.items()}
    unlocks: dict[int, list[int]] = {i: [] for i in after}
    for i, deps in after.items():
        for d in deps:
            unlocks[d].append(i)
    ready = [i for i, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    out: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        out.append(i)
        for j in unlocks[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    for i in sorted(set(after) - set(out)):
        names = ", ".join(f"bulkId:{ref}" for ref in sorted(planned[i].needs))
        planned[i].error = Conflict(f"The bulkId references of this operation ({names[:200]}) form a cycle or "
                                    "depend on one, so it cannot be ordered (RFC 7644 §3.7.1).")
        planned[i].job = None
        out.append(i)
    return out


def _job(op: dict[str, Any], method: str, bulk_id: str | None, ids: dict[str, str], settings: Settings,
         app: str, request_id: str, item: _Planned, audit: dict[str, Any]) -> WriteJob:
    if method not in _METHODS:
        raise InvalidSyntax(f"method must be POST, PUT, PATCH or DELETE, not {str(op.get('method'))[:20]!r}.")
    schema, resource_id = _parse_path(op.get("path"), ids)
    item.schema = schema
    if method == "POST":
        if resource_id is not None:
            raise InvalidSyntax("POST operations take a collection path such as /Users.")
        if not bulk_id:
            raise InvalidSyntax("POST operations need a bulkId (RFC 7644 §3.7).")
        resource_id = ids[bulk_id]
    elif resource_id is None:
        raise InvalidSyntax(f"{method} operations need a resource path such as /Users/<id>.")
    item.resource_id = resource_id
    data = _substitute(op.get("data"), ids)
    if method in ("POST", "PUT"):
        policy = Policy(settings.unknown_attributes)  # PATCH data: the worker applies the same policy
        data = validate_resource(data, schema, max_value_length=settings.max_value_length, undeclared=policy)
        policy.report()
        data = passwords.hash_in_resource(data)
    elif method == "PATCH":
        parse_patch_request(data, max_operations=settings.max_operations)
        data = passwords.hash_in_patch(data, schema)
    else:
        data = None
    version = op.get("version")
    return WriteJob(job_id=uuid.uuid4().hex, op=_METHODS[method], app=app,  # type: ignore[arg-type]
                    resource_type=schema.name, resource_id=resource_id, body=data,
                    if_match=version if isinstance(version, str) else None, request_id=request_id,
                    meta={**audit, "answer": False, "password_hashed": True})


class _BusFailed(Exception):
    """A batch of the request got no result after an earlier one was applied."""


def run(bus: Bus, planned: list[_Planned], fail_on_errors: int | None, timeout: float) -> None:
    """Apply the planned jobs in ``order``, stopping at the ``failOnErrors``-th error.

    A request may go out in several batches. When one fails (503: not applied; or an
    unknown outcome) after an earlier batch was applied, the request is not answered 503
    as a whole, which would say nothing of it was applied: the applied operations keep
    their results, the failed batch's operations get its error, and nothing after it runs."""
    limit = fail_on_errors if fail_on_errors is not None else len(planned) + 1
    errors = 0
    pending: list[_Planned] = []

    def flush() -> None:
        nonlocal errors
        if pending:
            try:
                results = bus.apply_in_order([p.job for p in pending], timeout)  # type: ignore[misc]
            except ScimError as exc:
                if not any(p.result is not None for p in planned):
                    raise  # nothing of the request was applied: the whole answer
                for item in pending:
                    item.error = exc
                raise _BusFailed() from exc
            for item, result in zip(pending, results):
                item.result = result
                errors += result.status >= 400
            pending.clear()

    def apply_all() -> None:
        nonlocal errors
        for item in (planned[i] for i in order(planned)):
            if item.error is None and item.needs:
                needed = [planned[i] for i in item.needs.values()]
                if any(p in pending for p in needed):  # identity: _Planned compares as objects
                    flush()  # learn whether what it names was created
                    if errors >= limit:
                        return
                failed = sorted(ref for ref, i in item.needs.items() if planned[i].failed)
                if failed:
                    item.error = Conflict(f"bulkId:{failed[0][:100]} names an operation of this request that failed, "
                                          "so there is no resource to refer to.")
                    item.job = None
            if item.error is not None:
                flush()
                if errors >= limit:
                    return
                errors += 1
            else:
                pending.append(item)
                if len(pending) >= limit - errors:  # these alone could reach the limit: learn their outcome
                    flush()
            if errors >= limit:
                return
        flush()

    try:
        apply_all()
    except _BusFailed:
        pass  # the applied operations and the failed batch's answers make the response


def response(planned: list[_Planned], base_url: str) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for item in planned:
        result = item.result
        if item.error is None and result is None:
            continue  # not applied: failOnErrors stopped the request before it
        entry: dict[str, Any] = {"method": item.method}
        if item.bulk_id:
            entry["bulkId"] = item.bulk_id
        if item.error is not None:
            entry["status"] = str(item.error.status)
            entry["response"] = item.error.to_body()
        else:
            assert result is not None
            entry["status"] = str(result.status)
            if result.status >= 400:
                entry["response"] = from_body(result.body or {"status": result.status}).to_body()
            elif item.schema is not None and item.resource_id is not None:
                entry["location"] = f"{base_url}/{item.schema.endpoint}/{item.resource_id}"
                if result.version is not None and item.method != "DELETE":
                    entry["version"] = etag(result.version)
                if result.body is not None and item.method == "POST":
                    entry["response"] = with_location(result.body, base_url, item.schema)
        out.append(entry)
    return {"schemas": [BULK_RESPONSE], "Operations": out}
