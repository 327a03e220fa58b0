"""Size limits on what a client sends, checked before any work is queued or queried.

The body size is capped by the gateway and by ``json_body``; these bound the shape of a
body that got through (nesting depth, array length, group members named in one request)
and the length of a filter. Each limit is a setting and answers a SCIM error, so no request
can make a worker or the reader run away.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Flask

from libs.config import Settings
from libs.scim.errors import InvalidFilter, InvalidSyntax, InvalidValue, PayloadTooLarge
from libs.web.request import current_request

NUL = "\x00"
_ESCAPED_NUL = re.compile(r"\\u0000", re.I)


def check_json(doc: Any, settings: Settings) -> Any:
    """``doc`` itself, if no object/array nests deeper than allowed and no array is too long."""
    max_depth, max_items = settings.max_json_depth, settings.max_array_items
    if isinstance(doc, str) and NUL in doc:
        raise InvalidValue("Values cannot contain the NUL character (U+0000).")
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:  # iterative: a deep document must not exhaust Python's stack either
        node, depth = stack.pop()
        if isinstance(node, dict):
            if any(NUL in key for key in node):
                raise InvalidValue("Attribute names cannot contain the NUL character (U+0000).")
            children = node.values()
        elif isinstance(node, list):
            if len(node) > max_items:
                raise PayloadTooLarge(f"An array of the body has more than {max_items} elements.")
            children = node
        else:
            continue
        if depth > max_depth:
            raise InvalidSyntax(f"The body nests objects and arrays deeper than {max_depth} levels.")
        for child in children:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
            elif isinstance(child, str) and NUL in child:
                # PostgreSQL text cannot hold it (found by schemathesis: a 503 from the worker).
                raise InvalidValue("Values cannot contain the NUL character (U+0000).")
    return doc


def _count(value: Any) -> int:
    return len(value) if isinstance(value, list) else 1 if value is not None else 0


def count_members(body: Any, patch: bool) -> int:
    """Group members a resource body or a PatchOp request names."""
    if not isinstance(body, dict):
        return 0
    if not patch:
        return _count(body.get("members"))
    total = 0
    operations = body.get("Operations")
    if not isinstance(operations, list):  # parse_patch_request answers that one (found by schemathesis)
        return 0
    for op in operations:
        if not isinstance(op, dict):
            continue
        path = op.get("path")
        value = op.get("value")
        if isinstance(path, str) and path.strip().lower().startswith("members"):
            total += _count(value)
        elif path is None and isinstance(value, dict):
            total += sum(_count(v) for k, v in value.items() if isinstance(k, str) and k.lower() == "members")
    return total


def check_members(body: Any, settings: Settings, *, patch: bool = False) -> None:
    if count_members(body, patch) > settings.max_members:
        raise PayloadTooLarge(f"One request may name at most {settings.max_members} group members.")


def check_filter(text: Any, settings: Settings) -> None:
    if text is None or text == "":
        return
    if not isinstance(text, str):
        raise InvalidFilter("The filter must be a string.")
    if len(text) > settings.max_filter_length:
        raise InvalidFilter(f"The filter is longer than {settings.max_filter_length} characters.")
    if NUL in text or _ESCAPED_NUL.search(text):  # raw, or as the JSON escape a quoted value decodes
        raise InvalidFilter("A filter cannot contain the NUL character (U+0000).")


def init_app(app: Flask) -> None:
    @app.before_request
    def _no_nul_in_the_url() -> None:
        # An id or filter with U+0000 can match nothing, and PostgreSQL refuses it outright.
        req = current_request()
        if NUL in req.path or any(NUL in k or NUL in v for k, v in req.args.items(multi=True)):
            raise InvalidValue("The URL cannot contain the NUL character (U+0000).")
