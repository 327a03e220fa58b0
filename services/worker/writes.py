"""Apply one validated write to the directory store, in one transaction.

Each function runs inside the batch's ``UnitOfWork`` (libs/store/unit_of_work.py) and
returns the ``WriteResult`` the front answers; a ``ScimError`` raised here rolls the transaction back and becomes the
answer. The job id is recorded with the change, so a job that runs twice applies once.
"""

from __future__ import annotations

from typing import Any

from libs.bus.messages import WriteJob, WriteResult
from libs.config import Settings
from libs.scim import passwords
from libs.scim.errors import Mutability, NotFound, PreconditionFailed, ScimError
from libs.scim.patch import apply_patch, parse_patch_request
from libs.scim.render import etag
from libs.scim.schemas import GROUPS, RESOURCE_TYPES, USERS, ResourceSchema
from libs.scim.undeclared import Policy
from libs.scim.validate import validate_resource
from libs.store.directory import StoredResource, clash, name_key
from libs.store.unit_of_work import UnitOfWork


def _member_ids(doc: dict[str, Any]) -> list[str]:
    return [m["value"] for m in doc.pop("members", None) or []]


def _check_precondition(job: WriteJob, current: StoredResource) -> None:
    if job.if_match and job.if_match.strip() != "*":
        wanted = {t.strip() for t in job.if_match.split(",")}
        if etag(current.version) not in wanted and f'"{current.version}"' not in wanted:
            raise PreconditionFailed(f"The resource is at version {etag(current.version)}.")


def _load(unit: UnitOfWork, job: WriteJob, schema: ResourceSchema) -> StoredResource:
    current = unit.load(job.app, schema, job.resource_id, lock=True, deleting=job.op == "delete")
    if current is None:
        raise NotFound(f"{schema.name} {job.resource_id!r} not found.")
    _check_precondition(job, current)
    return current


def _check_immutable(schema: ResourceSchema, old: dict[str, Any], new: dict[str, Any]) -> None:
    """RFC 7643 §2.2 ``immutable``: set once, never changed (a configured extension may declare one)."""
    for urn in schema.schema_urns:
        is_core = urn == schema.core.urn
        old_part = old if is_core else old.get(urn) or {}
        new_part = new if is_core else new.get(urn) or {}
        for attribute in schema.top_level(urn).values():
            if attribute.mutability != "immutable" or attribute.name == "members":
                continue
            before = old_part.get(attribute.name)
            if before is not None and new_part.get(attribute.name) != before:
                raise Mutability(f"{attribute.name} is immutable: it keeps the value it was given first.")


def _unique_name(settings: Settings, app: str, schema: ResourceSchema) -> bool:
    """userName is unique in its app; a group's displayName where the app's setting says so."""
    return schema is USERS or settings.group_names_unique(app)


def _check_unique_if_renamed(unit: UnitOfWork, app: str, schema: ResourceSchema,
                             current: StoredResource, doc: dict[str, Any], unique: bool) -> None:
    """A write that keeps the name cannot break its uniqueness: most of Entra's PATCHes
    (manager, active, department …) skip the query."""
    if unique and name_key(schema, doc) != name_key(schema, current.doc):
        unit.check_unique(app, schema, doc, exclude_pk=current.pk)


def _hashed(job: WriteJob) -> bool:
    """The front hashed the password before enqueueing (older jobs: the worker hashes)."""
    return bool(job.meta.get("password_hashed"))


def _ignore_unknown(settings: Settings) -> bool:
    return settings.unknown_members == "ignore"


def _answer(unit: UnitOfWork, schema: ResourceSchema, stored: StoredResource,
            status: int, *, new: bool = False, members: bool = True) -> WriteResult:
    if new and schema is USERS:  # a user created a moment ago belongs to no group yet
        return WriteResult(status, stored.document(), stored.version)
    if schema is GROUPS and not members:
        return WriteResult(status, stored.document(), stored.version)
    if schema is GROUPS:
        members = unit.members_of([stored.pk])[stored.pk]
        return WriteResult(status, stored.document(members=members), stored.version)
    groups = unit.groups_of([stored.pk])[stored.pk] if stored.in_groups is not False else None
    return WriteResult(status, stored.document(groups=groups or None), stored.version)


def _new_document(job: WriteJob, schema: ResourceSchema, settings: Settings) -> dict[str, Any]:
    doc = validate_resource(job.body, schema, max_value_length=settings.max_value_length)
    passwords.seal(doc, None, keep_if_absent=False, hashed=_hashed(job))
    return doc


def create(unit: UnitOfWork, job: WriteJob, settings: Settings) -> WriteResult:
    schema = RESOURCE_TYPES[job.resource_type]
    doc = _new_document(job, schema, settings)
    member_ids = _member_ids(doc)
    unique = _unique_name(settings, job.app, schema)
    if unique:
        unit.check_unique(job.app, schema, doc)
    stored = unit.insert_resource(job.app, schema, job.resource_id, doc, unique_name=unique)
    unit.add_members(job.app, stored, member_ids, ignore_unknown=_ignore_unknown(settings))
    return _answer(unit, schema, stored, 201, new=True)


def can_create_together(job: WriteJob) -> bool:
    """A create that touches no other resource (no ``members``): ``create_many`` can take it."""
    if job.op != "create" or not isinstance(job.body, dict):
        return False
    return job.resource_type != GROUPS.name or not any(
        isinstance(k, str) and k.lower() == "members" and v for k, v in job.body.items())


def create_many(unit: UnitOfWork, jobs: list[WriteJob],
                settings: Settings) -> list[WriteResult]:
    """Creates of one app and resource type (each ``can_create_together``) in three statements.

    Each answer is what ``create`` would have given in this order: a refused body is its
    own 400, and a name that must be unique and is already taken — in the store or by an
    earlier write of the same batch — is that write's 409. A concurrent writer that wins a race between
    the check and the insert raises ``IntegrityError``: the caller re-runs the writes one by one.
    """
    schema = RESOURCE_TYPES[jobs[0].resource_type]
    results: list[WriteResult | None] = [None] * len(jobs)
    docs: dict[int, dict[str, Any]] = {}
    for k, job in enumerate(jobs):
        try:
            docs[k] = _new_document(job, schema, settings)
        except ScimError as exc:
            results[k] = WriteResult(exc.status, exc.to_body())
    unique = _unique_name(settings, jobs[0].app, schema)
    names = unit.taken(jobs[0].app, schema, list(docs.values())) if docs and unique else set()
    accepted: list[int] = []
    for k, doc in docs.items():
        if unique:
            if (refused := clash(schema, doc, names)) is not None:
                results[k] = WriteResult(refused.status, refused.to_body())
                continue
            names.add(name_key(schema, doc))
        accepted.append(k)
    stored = unit.insert_resources(jobs[0].app, schema, [(jobs[k].resource_id, docs[k]) for k in accepted],
                                    unique_name=unique)
    for k, resource in zip(accepted, stored):
        results[k] = WriteResult(201, resource.document(members=[] if schema is GROUPS else None), resource.version)
    return results  # type: ignore[return-value]


def replace(unit: UnitOfWork, job: WriteJob, settings: Settings) -> WriteResult:
    schema = RESOURCE_TYPES[job.resource_type]
    current = _load(unit, job, schema)
    doc = validate_resource(job.body, schema, max_value_length=settings.max_value_length)
    passwords.seal(doc, current.doc, keep_if_absent=True, hashed=_hashed(job))
    _check_immutable(schema, current.doc, doc)
    member_ids = _member_ids(doc)
    unique = _unique_name(settings, job.app, schema)
    _check_unique_if_renamed(unit, job.app, schema, current, doc, unique)
    stored = unit.update_resource(schema, current, doc, unique_name=unique)
    if schema is GROUPS:
        unit.remove_members(job.app, stored, None)
        unit.add_members(job.app, stored, member_ids, ignore_unknown=_ignore_unknown(settings))
    return _answer(unit, schema, stored, 200)


def patch(unit: UnitOfWork, job: WriteJob, settings: Settings) -> WriteResult:
    schema = RESOURCE_TYPES[job.resource_type]
    current = _load(unit, job, schema)
    operations = parse_patch_request(job.body)
    # Undeclared attributes: ignored (and reported by this worker) or rejected, as the front
    # does for the bodies of POST and PUT.
    policy = Policy(settings.unknown_attributes)
    result = apply_patch(current.doc, operations, schema,
                         load_members=lambda: unit.members_of([current.pk])[current.pk], undeclared=policy,
                         validated=True, max_value_length=settings.max_value_length)
    policy.report()
    if result.changed:
        passwords.seal(result.resource, current.doc, keep_if_absent=False, hashed=_hashed(job))
        _check_immutable(schema, current.doc, result.resource)
    members_changed = False
    if result.members is not None:
        changes = result.members
        if changes.remove_all:
            members_changed |= unit.remove_members(job.app, current, None) > 0
        if changes.remove:
            members_changed |= unit.remove_members(job.app, current, changes.remove) > 0
        if changes.add:
            members_changed |= unit.add_members(job.app, current, [m["value"] for m in changes.add],
                                                 ignore_unknown=_ignore_unknown(settings)) > 0
    stored = current
    unique = _unique_name(settings, job.app, schema)
    if result.changed:
        _check_unique_if_renamed(unit, job.app, schema, current, result.resource, unique)
    if result.changed or members_changed:
        stored = unit.update_resource(schema, current, result.resource, doc_changed=result.changed,
                                       unique_name=unique)
    if schema is GROUPS and not job.meta.get("answer"):
        # Entra: "groups: 204 recommended, do not return the member list".
        return WriteResult(204, None, stored.version)
    return _answer(unit, schema, stored, 200, members=job.meta.get("members", True))


def delete(unit: UnitOfWork, job: WriteJob, settings: Settings) -> WriteResult:
    schema = RESOURCE_TYPES[job.resource_type]
    current = _load(unit, job, schema)
    unit.delete_resource(current)
    return WriteResult(204, None, current.version + 1)


OPERATIONS = {"create": create, "replace": replace, "patch": patch, "delete": delete}
