"""What can go wrong when a change is delivered to a downstream application.

::

    ConnectorError            a delivery failed
    ├── Retryable             the target may accept the same change later: back off, retry
    │   ├── Timeout           no answer in time
    │   └── Unavailable       refused connection, 5xx, 429, deadlock, server down
    └── Permanent             retrying the same state cannot succeed: dead-letter it
        ├── Rejected          the target refused the data (4xx, constraint, schema violation)
        └── Conflict          the target holds a clashing entry it will not let us overwrite

Each connector translates its client library's exceptions at the edge (``raise … from
exc``), so the delivery loop only ever sees this tree; anything else is a bug and is
treated as retryable (a fixed bug or a restarted target delivers it).
"""

from __future__ import annotations


class ConnectorError(Exception):
    """A delivery to a downstream application failed."""


class Retryable(ConnectorError):
    """The target may accept the same change later."""


class Timeout(Retryable):
    """The target did not answer in time."""


class Unavailable(Retryable):
    """The target refused the connection or answered that it cannot serve now."""


class Permanent(ConnectorError):
    """Retrying the same state cannot succeed; the change goes to the dead letters."""


class Rejected(Permanent):
    """The target refused the data."""


class Conflict(Permanent):
    """The target holds a clashing entry that is not ours to overwrite."""


class Unsupported(ConnectorError):
    """The connector cannot do this operation at all (e.g. read back a web hook for resync)."""
