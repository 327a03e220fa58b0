"""The write job's message: plain JSON, readable by any worker version and by an operator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Op = Literal["create", "replace", "patch", "delete"]


@dataclass(frozen=True)
class WriteJob:
    """One SCIM write, as the front validated it.

    ``job_id`` is the idempotency key: the worker records it in the write's transaction, so a
    job that runs twice (its worker died after committing) applies once.
    """

    job_id: str
    op: Op
    app: str
    resource_type: str
    resource_id: str
    body: dict[str, Any] | None = None
    if_match: str | None = None
    request_id: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        # Shallow: the payload is serialised at once, and asdict's deep copy of the body
        # cost ~25 µs a write on the front.
        return dict(vars(self))

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> WriteJob:
        return cls(**payload)


@dataclass(frozen=True)
class WriteResult:
    """What the worker answers: an HTTP status and a body (resource or SCIM error)."""

    status: int
    body: dict[str, Any] | None = None
    version: int | None = None

    def to_payload(self) -> dict[str, Any]:
        return {"status": self.status, "body": self.body, "version": self.version}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> WriteResult:
        return cls(int(payload["status"]), payload.get("body"), payload.get("version"))
