"""``webhook``: every change POSTed as a signed JSON event to an HTTP endpoint.

The event carries the resource as it is now (the SCIM document without the attributes that
are ``returned: never``, such as the password's hash, or the mapped fields when the connector
has a mapping), its version and the outbox ``seq``, which grows with
every change of a resource, deletions included: a receiver keeps the event with the
highest seq and ignores older ones, so a retried or reordered delivery cannot move it back.
``X-Scimbus-Delivery`` names the state (connector, resource, seq) for receivers that dedupe.

Signature (the Stripe/GitHub scheme): ``X-Scimbus-Timestamp`` is the Unix time of sending
and ``X-Scimbus-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." + body)>``; the
receiver recomputes it and rejects old timestamps, which defeats replays.

A timeout, a refused connection, 408, 429 and 5xx are retryable; any other 4xx means the
receiver refuses this event (dead letter). 2xx is delivered.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from libs.connectors.base import Connector, Lookup, Previous
from libs.connectors.errors import Rejected, Timeout, Unavailable
from libs.connectors.mapping import withhold

RETRYABLE_STATUS = frozenset({408, 425, 429})


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _version(doc: dict[str, Any]) -> int:
    raw = str((doc.get("meta") or {}).get("version", "0"))
    digits = "".join(ch for ch in raw if ch.isdigit())
    return int(digits or 0)


@dataclass
class WebhookConnector(Connector):
    kind_name = "webhook"
    _client: httpx.Client | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_config(cls, **common) -> WebhookConnector:
        options = common["options"]
        if not str(options.get("url", "")).startswith(("http://", "https://")):
            raise ValueError("url must be an http:// or https:// URL")
        if not options.get("secret"):
            raise ValueError("secret is required (the HMAC-SHA256 signing key)")
        return cls(**common)

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=float(self.options.get("timeout", 10)),
                                        headers=dict(self.options.get("headers") or {}),
                                        verify=self.options.get("verify_tls", True))
        return self._client

    def render(self, resource_type: str, doc: dict[str, Any], lookup: Lookup) -> dict[str, Any]:
        mapping = self.mappings[resource_type]
        return mapping.render(doc, lookup) if mapping.fields else withhold(resource_type, doc)

    def key(self, resource_type: str, doc: dict[str, Any], fields: dict[str, Any]) -> str:
        return doc["id"]

    def apply(self, resource_type: str, doc: dict[str, Any], fields: dict[str, Any], previous: Previous,
              lookup: Lookup) -> str:
        self._post({"type": "upserted", "resourceType": resource_type, "id": doc["id"], "version": _version(doc),
                    "seq": previous.seq, "resource": fields})
        return doc["id"]

    def remove(self, resource_type: str, resource_id: str, previous: Previous) -> None:
        self._post({"type": "deleted", "resourceType": resource_type, "id": resource_id, "version": None,
                    "seq": previous.seq, "resource": None})

    def _post(self, event: dict[str, Any]) -> None:
        event["connector"] = self.name
        body = orjson.dumps(event)
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Scimbus-Timestamp": stamp,
            "X-Scimbus-Signature": sign(str(self.options["secret"]).encode(), stamp, body),
            "X-Scimbus-Delivery": f"{self.name}:{event['resourceType']}:{event['id']}:{event['seq']}",
        }
        try:
            response = self.client.post(self.options["url"], content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise Timeout(f"web hook did not answer in time: {exc}") from exc
        except httpx.HTTPError as exc:
            raise Unavailable(f"web hook unreachable: {exc}") from exc
        if response.status_code < 300:
            return
        detail = f"web hook answered {response.status_code}: {response.text[:200]}"
        if response.status_code >= 500 or response.status_code in RETRYABLE_STATUS:
            raise Unavailable(detail)
        raise Rejected(detail)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
