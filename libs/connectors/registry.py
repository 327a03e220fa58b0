"""Build the enabled connectors from the ``[connectors.<name>]`` tables of the config file.

Each table names its ``type`` (sql, ldap, webhook, scim); the rest is that connector's
config, validated here at start so a bad mapping stops the deliverer at boot, naming the
connector, instead of dead-lettering every change.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from libs.connectors.base import Connector, RetryPolicy
from libs.connectors.mapping import Mapping as FieldMapping, MappingError, Scope
from libs.scim import extensions

TYPES = {
    "sql": "libs.connectors.sql:SqlConnector",
    "ldap": "libs.connectors.ldap:LdapConnector",
    "webhook": "libs.connectors.webhook:WebhookConnector",
    "scim": "libs.connectors.scim:ScimConnector",
}
_SECTIONS = {"User": "users", "Group": "groups"}


def _parse_common(name: str, spec: Mapping[str, Any], default_app: str) -> dict[str, Any]:
    retry = RetryPolicy(**dict(spec.get("retry") or {}))
    mappings = {kind: FieldMapping.parse(dict(spec[section])) for kind, section in _SECTIONS.items()
                if section in spec}
    options = {k: v for k, v in spec.items() if k not in ("type", "enabled", "retry", "scope")}
    options.setdefault("app", default_app)
    return {"name": name, "mappings": mappings, "scope": Scope.parse(spec.get("scope")), "retry": retry,
            "options": options}


def build_connector(name: str, spec: Mapping[str, Any], default_app: str = "default") -> Connector:
    kind = spec.get("type")
    if kind not in TYPES:
        raise MappingError(f"connector {name!r}: type must be one of {sorted(TYPES)}, not {kind!r}")
    module, cls = TYPES[kind].split(":")
    try:
        common = _parse_common(name, spec, default_app)
        return getattr(importlib.import_module(module), cls).from_config(**common)
    except (MappingError, TypeError, KeyError, ValueError) as exc:
        raise MappingError(f"connector {name!r}: {exc}") from exc


def build_connectors(settings) -> dict[str, Connector]:
    """Every connector of the config file that is not ``enabled = false``."""
    extensions.install(settings.file)  # which extension attributes are returned: never
    tables = settings.file.get("connectors") or {}
    return {name: build_connector(name, spec, settings.default_app) for name, spec in tables.items()
            if spec.get("enabled", True)}


def connector_names(settings) -> list[str]:
    return [n for n, spec in (settings.file.get("connectors") or {}).items() if spec.get("enabled", True)]
