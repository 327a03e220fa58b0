"""RQ's job and result serializer: JSON through orjson.

Payloads stay plain JSON (readable by any worker version and by an operator, never
pickle), but orjson encodes and decodes them several times faster than the stdlib json
RQ's ``JSONSerializer`` uses: a batch result of 64 resources is decoded on every write's
path. Front and workers must use the same serializer.
"""

from __future__ import annotations

from typing import Any

import orjson


class OrjsonSerializer:
    @staticmethod
    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    @staticmethod
    def loads(data: bytes | str) -> Any:
        return orjson.loads(data)
