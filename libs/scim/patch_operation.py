"""One parsed PATCH operation (RFC 7644 §3.5.2), apart from the engine that applies it.

The Entra dialect normalisation (``libs.scim.entra``) rewrites operations before the
engine (``libs.scim.patch``) sees them, and the engine uses the dialect's helpers; with the
operation in a module of its own that needs neither, the two import one way only
(patch → entra), and ``libs/`` has no import cycle (tests/libs/test_import_cycles.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from libs.scim.filter import PatchPath


@dataclass(frozen=True)
class PatchOperation:
    """One parsed operation; ``path_text`` is the path as sent, for error messages."""

    op: str
    path: PatchPath | None = None
    value: Any = None
    path_text: str | None = None
