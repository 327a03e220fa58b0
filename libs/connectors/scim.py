"""``scim``: relay every change to another SCIM 2.0 service provider.

::

    [connectors.cloudapp]
    type = "scim"
    url = "https://app.example/scim/v2"
    token = "…"                       # bearer token of the remote endpoint
    [connectors.cloudapp.users]       # empty: the SCIM document as we hold it, less what is
                                      # returned: never (the password's hash); or a mapping
    [connectors.cloudapp.groups]

The remote assigns its own ids; the delivery ledger keeps ours → theirs (``remote_id``),
and every relayed resource carries our id as its ``externalId``, so the mapping can be
rebuilt from the remote alone (resync, or a ledger lost with its database): the externalId
is our anchor. A create that meets an existing resource (409) replaces it when its
``externalId`` is ours; one without (the remote's own, or another client's, holding the
userName or displayName) is a conflict, left alone unless ``scimbus resync --adopt`` takes
it over. Group members are translated to remote ids the same way. Writes are PUTs of the whole resource: the
same state relayed twice leaves the remote as once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from libs.connectors.base import Connector, Lookup, Previous
from libs.connectors.errors import Conflict, Rejected, Timeout, Unavailable
from libs.connectors.mapping import withhold

_ENDPOINT = {"User": "Users", "Group": "Groups"}
_DROP = ("id", "meta", "groups", "members")
_CHUNK = 50
_REMOTE = "remote:"
"""Key prefix, in ``read``, of a remote resource without an externalId (the remote's id follows)."""


@dataclass
class ScimConnector(Connector):
    kind_name = "scim"
    _client: httpx.Client | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_config(cls, **common) -> ScimConnector:
        options = common["options"]
        if not str(options.get("url", "")).startswith(("http://", "https://")):
            raise ValueError("url must be the remote's SCIM base URL (http:// or https://)")
        return cls(**common)

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            headers = {"Content-Type": "application/scim+json", "Accept": "application/scim+json"}
            if self.options.get("token"):
                headers["Authorization"] = f"Bearer {self.options['token']}"
            self._client = httpx.Client(base_url=str(self.options["url"]).rstrip("/"), headers=headers,
                                        timeout=float(self.options.get("timeout", 10)),
                                        verify=self.options.get("verify_tls", True))
        return self._client

    def _call(self, method: str, path: str, *, ok: tuple[int, ...] = (), **kw) -> httpx.Response:
        try:
            response = self.client.request(method, path, **kw)
        except httpx.TimeoutException as exc:
            raise Timeout(f"SCIM endpoint did not answer in time: {exc}") from exc
        except httpx.HTTPError as exc:
            raise Unavailable(f"SCIM endpoint unreachable: {exc}") from exc
        if response.status_code < 300 or response.status_code in ok:
            return response
        detail = f"SCIM {method} {path} answered {response.status_code}: {response.text[:300]}"
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise Unavailable(detail)
        if response.status_code == 409:
            raise Conflict(detail)
        raise Rejected(detail)

    # ------------------------------------------------------------------ contract
    def render(self, resource_type: str, doc: dict[str, Any], lookup: Lookup) -> dict[str, Any]:
        mapping = self.mappings[resource_type]
        body = mapping.render(doc, lookup) if mapping.fields else {
            k: v for k, v in withhold(resource_type, doc).items() if k not in _DROP}
        body["externalId"] = doc["id"]
        if resource_type == "Group":
            ids = [m["value"] for m in doc.get("members") or []]
            users = lookup("User", ids)
            body["members"] = sorted(i for i in ids if i in users and self.scope.includes("User", users[i]))
        return body

    def key(self, resource_type: str, doc: dict[str, Any], fields: dict[str, Any]) -> str:
        return doc["id"]

    def remote_id_before_apply(self, resource_type: str, doc: dict[str, Any], fields: dict[str, Any]) -> None:
        return None  # the remote assigns it; remove finds the resource by externalId

    def _find(self, resource_type: str, our_ids: list[str]) -> dict[str, str]:
        """our id → remote id, by the remote's externalId."""
        found: dict[str, str] = {}
        for start in range(0, len(our_ids), _CHUNK):
            chunk = our_ids[start:start + _CHUNK]
            flt = " or ".join(f'externalId eq "{i}"' for i in chunk)
            body = self._call("GET", f"/{_ENDPOINT[resource_type]}",
                              params={"filter": flt, "count": len(chunk), "attributes": "externalId"}).json()
            found.update((r["externalId"], r["id"]) for r in body.get("Resources", []) if r.get("externalId"))
        return found

    def apply(self, resource_type: str, doc: dict[str, Any], fields: dict[str, Any], previous: Previous,
              lookup: Lookup) -> str:
        endpoint = _ENDPOINT[resource_type]
        body = dict(fields)
        if resource_type == "Group":
            remote = self._find("User", body["members"]) if body["members"] else {}
            body["members"] = [{"value": remote[i]} for i in body["members"] if i in remote]
        if previous.remote_id:
            response = self._call("PUT", f"/{endpoint}/{previous.remote_id}", json=body, ok=(404,))
            if response.status_code != 404:
                return previous.remote_id
        response = self._call("POST", f"/{endpoint}", json=body, ok=(409,))
        if response.status_code != 409:
            return response.json()["id"]
        existing = self._find(resource_type, [doc["id"]]).get(doc["id"])
        if existing is None and previous.adopt:
            existing = self._holder(resource_type, body)
        if existing is None:
            raise Conflict(f"SCIM POST /{endpoint} answered 409 and no resource has externalId {doc['id']!r}: "
                           f"{response.text[:300]} (scimbus resync --adopt takes the one in the way over)")
        self._call("PUT", f"/{endpoint}/{existing}", json=body)
        return existing

    def _holder(self, resource_type: str, body: dict[str, Any]) -> str | None:
        """The remote id of the resource holding this one's unique name (userName, displayName)."""
        name = "userName" if resource_type == "User" else "displayName"
        value = str(body.get(name) or "").replace("\\", "\\\\").replace('"', '\\"')
        found = self._call("GET", f"/{_ENDPOINT[resource_type]}",
                           params={"filter": f'{name} eq "{value}"', "count": 2, "attributes": name}).json()
        resources = found.get("Resources") or []
        return resources[0]["id"] if len(resources) == 1 else None

    def remove(self, resource_type: str, resource_id: str, previous: Previous) -> None:
        endpoint = _ENDPOINT[resource_type]
        if previous.remote_id and self._call("DELETE", f"/{endpoint}/{previous.remote_id}",
                                             ok=(404,)).status_code != 404:
            return
        # No id recorded, or none there: an attempt whose answer was lost may have created the
        # resource under an id the ledger never learnt (a first create, or a re-create after the
        # remote lost it). Our id, its externalId, finds it.
        remote = self._find(resource_type, [resource_id]).get(resource_id)
        if remote:
            self._call("DELETE", f"/{endpoint}/{remote}", ok=(404,))

    def read(self, resource_type: str) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        users: dict[str, str] = {}
        start = 1
        while True:
            page = self._call("GET", f"/{_ENDPOINT[resource_type]}", params={"startIndex": start, "count": 200}).json()
            for r in page.get("Resources", []):  # ours by externalId; the rest keyed by the remote's id
                out[r.get("externalId") or f"{_REMOTE}{r['id']}"] = r
            start += len(page.get("Resources", []))
            if not page.get("Resources") or start > page.get("totalResults", 0):
                break
        if resource_type == "Group":
            users = {v["id"]: k for k, v in self.read("User").items()}
            for r in out.values():
                r["members"] = sorted(users[m["value"]] for m in r.get("members") or [] if m["value"] in users)
        return out

    def owner(self, resource_type: str, key: str, fields: dict[str, Any]) -> str | None:
        return fields.get("externalId") or None

    def remove_key(self, resource_type: str, key: str) -> bool | None:
        if key.startswith(_REMOTE):  # a foreign resource (resync --prune-foreign)
            path = f"/{_ENDPOINT[resource_type]}/{key[len(_REMOTE):]}"
            now = self._call("GET", path, ok=(404,))
            if now.status_code != 404 and now.json().get("externalId"):
                return False  # adopted meanwhile
            self._call("DELETE", path, ok=(404,))
            return True
        self.remove(resource_type, key, Previous(None, True))
        return True

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
