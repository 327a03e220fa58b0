"""SCIM errors: one class per RFC 7644 §3.12 (Table 9) error type, rendered in one place.

Every failure a client can cause is raised as a ``ScimError`` subclass and becomes a
``urn:ietf:params:scim:api:messages:2.0:Error`` body with ``status`` as a string, as the
RFC and Entra expect. Anything else reaching a service's error handler is a bug: it is
logged with its traceback and answered as a bare 500 without one.

Errors also cross the bus: the worker returns ``to_body()`` as the job result and the front
answers it verbatim, so a 409 raised in the worker reaches Entra unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


class ScimError(Exception):
    """Base of every error answered to a SCIM client."""

    status: ClassVar[int] = 400
    scim_type: ClassVar[str | None] = None
    default_detail: ClassVar[str] = "The request is not valid."

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        self.detail = detail or self.default_detail
        self.headers = headers or {}
        super().__init__(self.detail)

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(self.status), "detail": self.detail}
        if self.scim_type:
            body["scimType"] = self.scim_type
        return body


class InvalidFilter(ScimError):
    """The filter syntax is invalid or the filter is not supported (§3.4.2.2)."""

    scim_type = "invalidFilter"
    default_detail = "The specified filter syntax is invalid or the attribute and comparison are not supported."


class TooMany(ScimError):
    """The filter yields more results than the server will process (§3.4.2.2)."""

    scim_type = "tooMany"
    default_detail = "The filter yields too many results."


class Uniqueness(ScimError):
    """A unique attribute already has this value (§3.3, §3.5.1)."""

    status = 409
    scim_type = "uniqueness"
    default_detail = "One or more of the attribute values are already in use or are reserved."


class Mutability(ScimError):
    """The change would modify an immutable or read-only attribute (§3.5.2)."""

    scim_type = "mutability"
    default_detail = "The attempted modification is not compatible with the target attribute's mutability."


class InvalidSyntax(ScimError):
    """The request body could not be parsed or violates the schema structure (§3.12)."""

    scim_type = "invalidSyntax"
    default_detail = "The request body message structure was invalid or did not conform to the request schema."


class InvalidPath(ScimError):
    """The PATCH ``path`` is invalid or names an unsupported attribute (§3.5.2)."""

    scim_type = "invalidPath"
    default_detail = "The path attribute was invalid or malformed."


class NoTarget(ScimError):
    """The PATCH path's filter matched nothing (§3.5.2.2, §3.5.2.3)."""

    scim_type = "noTarget"
    default_detail = "The specified path did not yield an attribute or attribute value that could be operated on."


class InvalidValue(ScimError):
    """A required value is missing or a value is not compatible with its attribute (§3.12)."""

    scim_type = "invalidValue"
    default_detail = "A required value was missing, or the value specified was not compatible."


class InvalidVersion(ScimError):
    """The ``schemas`` of a protocol message are not the expected ones (§3.12)."""

    scim_type = "invalidVers"
    default_detail = "The specified SCIM protocol version is not supported."


class InvalidCursor(ScimError):
    """The paging cursor is not one this service issued for this query (RFC 9865 §2.1)."""

    scim_type = "invalidCursor"
    default_detail = "The cursor is invalid: send it empty for the first page, then nextCursor."


class ExpiredCursor(ScimError):
    """The paging cursor is older than ``cursorTimeout`` (RFC 9865 §2.1)."""

    scim_type = "expiredCursor"
    default_detail = "The cursor has expired: start again with an empty cursor."


class InvalidCount(ScimError):
    """``count`` is not a positive page size (RFC 9865 §2.1)."""

    scim_type = "invalidCount"
    default_detail = "count must be a positive integer."


class Sensitive(ScimError):
    """Sensitive information in the request URI (§3.12, §7.5.2)."""

    status = 403
    scim_type = "sensitive"
    default_detail = "The request cannot be completed because of sensitive information in the request URI."


class Unauthorized(ScimError):
    """Missing or wrong credentials (RFC 7644 §2)."""

    status = 401
    default_detail = "Authorization failure. The authorization header is invalid or missing."

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="scimbus"'})


class Forbidden(ScimError):
    status = 403
    default_detail = "The operation is not permitted with these credentials."


class NotFound(ScimError):
    status = 404
    default_detail = "Resource not found."


class MethodNotAllowed(ScimError):
    status = 405
    default_detail = "The method is not allowed on this endpoint."


class Conflict(ScimError):
    """The request contradicts itself or the state it names (a cycle of bulkId references,
    RFC 7644 §3.7.1; a reference to a Bulk operation that failed)."""

    status = 409
    default_detail = "The request conflicts with itself or with the state of the resources it names."


class PreconditionFailed(ScimError):
    status = 412
    default_detail = "The resource has changed since the version given in If-Match."


class PayloadTooLarge(ScimError):
    status = 413
    default_detail = "The request body is larger than the server accepts."


class UnsupportedMediaType(ScimError):
    status = 415
    default_detail = "Send the body as application/scim+json or application/json."


class TooManyRequests(ScimError):
    status = 429
    default_detail = "Too many requests; retry after the time given in Retry-After."


class InternalError(ScimError):
    status = 500
    default_detail = "The server failed to process the request; it has been logged."


class OutcomeUnknown(InternalError):
    """A worker took the write but its outcome was not known in time: it may have been
    applied (never a 503, which promises it was not). Read the resource before retrying."""

    default_detail = ("A worker took the write, but its outcome is not known yet: it may have been applied. "
                      "Read the resource before retrying the request.")


class NotImplementedOperation(ScimError):
    status = 501
    default_detail = "This operation is not implemented."


class Unavailable(ScimError):
    """The write could not be confirmed in time (bus or workers away); safe to retry."""

    status = 503
    default_detail = "The service is temporarily unable to complete the request; retry later."

    def __init__(self, detail: str | None = None, *, retry_after: int = 5) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)})


_BY_STATUS_AND_TYPE: dict[tuple[int, str | None], type[ScimError]] = {}


def _index(cls: type[ScimError]) -> None:
    _BY_STATUS_AND_TYPE.setdefault((cls.status, cls.scim_type), cls)
    for sub in cls.__subclasses__():
        _index(sub)


def from_body(body: dict[str, Any]) -> ScimError:
    """Rebuild the error a worker returned, so the front raises the same class."""
    if not _BY_STATUS_AND_TYPE:
        _index(ScimError)
    status = int(body.get("status", 500))
    cls = _BY_STATUS_AND_TYPE.get((status, body.get("scimType")), ScimError)
    err = cls(body.get("detail"))
    if cls is ScimError:
        err.status = status  # type: ignore[misc]
    return err
