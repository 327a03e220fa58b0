"""Discovery documents (RFC 7644 §4): ServiceProviderConfig, Schemas, ResourceTypes.

Built from ``libs.scim.schemas`` and the settings, so they advertise exactly what the
service does: PATCH, Bulk (with its limits), filters (with the page cap), sort and ETags;
no password change (``password`` is write-only, stored as an argon2id hash, and a bearer
token names no user, so there is no ``/Me`` to change one's own).
"""

from __future__ import annotations

from typing import Any

from libs.config import Settings
from libs.scim.extensions import all_schemas
from libs.scim.schemas import RESOURCE_TYPES, SERVICE_PROVIDER_CONFIG, as_enforced

DOCS_URL = "https://github.com/scimbus/scimbus#readme"


def service_provider_config(settings: Settings, base_url: str) -> dict[str, Any]:
    return {
        "schemas": [SERVICE_PROVIDER_CONFIG],
        "documentationUri": DOCS_URL,
        "patch": {"supported": True},
        "bulk": {"supported": True, "maxOperations": settings.bulk_max_operations,
                 "maxPayloadSize": settings.bulk_max_payload_bytes},
        "filter": {"supported": True, "maxResults": settings.max_results},
        "changePassword": {"supported": False},
        "sort": {"supported": True},
        "pagination": {  # RFC 9865 §5
            "cursor": True, "index": True, "defaultPaginationMethod": "index",
            "defaultPageSize": settings.max_results, "maxPageSize": settings.max_results,
            "cursorTimeout": settings.cursor_ttl,
        },
        "etag": {"supported": True},
        "authenticationSchemes": [{
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "A long-lived bearer token in the Authorization header (Entra's Secret Token).",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": True,
        }],
        "meta": {"resourceType": "ServiceProviderConfig", "location": f"{base_url}/ServiceProviderConfig"},
    }


def schemas(base_url: str, settings: Settings, app: str) -> list[dict[str, Any]]:
    """Every schema, with the uniqueness ``app`` enforces (it may differ from app to app)."""
    unique_group_names = settings.group_names_unique(app)
    return [as_enforced(s, unique_group_names=unique_group_names).to_document(base_url) for s in all_schemas()]


def resource_types(base_url: str) -> list[dict[str, Any]]:
    return [r.resource_type_document(base_url) for r in RESOURCE_TYPES.values()]
