"""Shared by the PATCH tests: RFC sample bodies and a one-call patch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from libs.scim.patch import PatchResult, apply_patch, parse_patch_request
from libs.scim.schemas import PATCH_OP, USERS

SAMPLES = Path(__file__).parents[2] / "samples"
BABS = "2819c223-7f76-453a-919d-413861904646"
JAMES = "08e1d05d-121c-4561-8b96-473d93df9210"


def sample(name: str) -> Any:
    return json.loads((SAMPLES / f"{name}.json").read_text())


def patch(resource: dict[str, Any], body: dict[str, Any], schema=USERS, **kw: Any) -> PatchResult:
    return apply_patch(resource, parse_patch_request(body), schema, **kw)


def ops(*operations: dict[str, Any]) -> dict[str, Any]:
    return {"schemas": [PATCH_OP], "Operations": list(operations)}
