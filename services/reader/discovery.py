"""Discovery documents (RFC 7644 §4): ServiceProviderConfig, Schemas, ResourceTypes.

Built from ``libs.scim.schemas`` and the settings, per app, so they advertise exactly what
the service does for that app: PATCH; Bulk with the limits in force (the smaller of the
Bulk payload limit and the body limit the gateway and the front apply); filters with the
page cap; sort; ETags (``If-Match``, ``If-None-Match``); password change (``password`` is
write-only and stored as an argon2id hash, and PUT or PATCH sets a new one); every way to
authenticate (bearer tokens, OAuth 2.0 client credentials at ``/oauth/token``, and Entra's
own JWTs for the app that accepts them); the uniqueness the app enforces.
"""

from __future__ import annotations

from typing import Any

from libs.config import Settings
from libs.scim.extensions import all_schemas
from libs.scim.schemas import RESOURCE_TYPES, SERVICE_PROVIDER_CONFIG, as_enforced

DOCS_URL = "https://github.com/scimbus/scimbus#readme"


def authentication_schemes(settings: Settings, base_url: str, app: str) -> list[dict[str, Any]]:
    token_url = base_url.rsplit("/scim", 1)[0] + "/oauth/token"
    schemes = [
        {"type": "oauthbearertoken", "name": "OAuth Bearer Token",
         "description": "A bearer token in the Authorization header: one made with `scimbus tokens create` "
                        "(Entra's Secret Token), or an access token issued at " + token_url + ".",
         "specUri": "https://www.rfc-editor.org/info/rfc6750", "documentationUri": DOCS_URL, "primary": True},
        {"type": "oauth2", "name": "OAuth 2.0 client credentials",
         "description": f"POST {token_url} with grant_type=client_credentials and a client secret, or an RFC 7523 "
                        "client assertion, for an access token valid "
                        f"{settings.access_token_ttl} s; its signing keys are published at "
                        + token_url.rsplit("/", 1)[0] + "/jwks.",
         "specUri": "https://www.rfc-editor.org/info/rfc6749", "documentationUri": DOCS_URL, "primary": False},
    ]
    if settings.entra_tenant_id and app in settings.entra_callers_by_app:
        schemes.append({
            "type": "oauthbearertoken", "name": "Microsoft Entra ID token",
            "description": f"A JWT Microsoft Entra ID issued for its provisioning service in tenant "
                           f"{settings.entra_tenant_id} for the application SCIM_ENTRA_CALLERS names (Secret Token "
                           "left empty).",
            "specUri": "https://www.rfc-editor.org/info/rfc6750", "documentationUri": DOCS_URL, "primary": False})
    return schemes


def service_provider_config(settings: Settings, base_url: str, app: str) -> dict[str, Any]:
    return {
        "schemas": [SERVICE_PROVIDER_CONFIG],
        "documentationUri": DOCS_URL,
        "patch": {"supported": True},
        "bulk": {"supported": True, "maxOperations": settings.bulk_max_operations,
                 "maxPayloadSize": min(settings.bulk_max_payload_bytes, settings.max_body_bytes)},
        "filter": {"supported": True, "maxResults": settings.max_results},
        "changePassword": {"supported": True},
        "sort": {"supported": True},
        "pagination": {  # RFC 9865 §5
            "cursor": True, "index": True, "defaultPaginationMethod": "index",
            "defaultPageSize": settings.max_results, "maxPageSize": settings.max_results,
            "cursorTimeout": settings.cursor_ttl,
        },
        "etag": {"supported": True},
        "authenticationSchemes": authentication_schemes(settings, base_url, app),
        "meta": {"resourceType": "ServiceProviderConfig", "location": f"{base_url}/ServiceProviderConfig"},
    }


def schemas(base_url: str, settings: Settings, app: str) -> list[dict[str, Any]]:
    """Every schema, with the uniqueness ``app`` enforces (it may differ from app to app)."""
    unique_group_names = settings.group_names_unique(app)
    return [as_enforced(s, unique_group_names=unique_group_names).to_document(base_url) for s in all_schemas()]


def resource_types(base_url: str) -> list[dict[str, Any]]:
    return [r.resource_type_document(base_url) for r in RESOURCE_TYPES.values()]
