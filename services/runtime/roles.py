"""The deployable roles, in one place: each is ``scimbus <name>``, a package under ``services/``.

The CLI registers a subcommand per role from here; the Procfile (the local run),
compose.yaml and the Kubernetes manifests start each role by this name, and their tests
(tests/deploy/test_one_source.py) read the list from here, so a role added or renamed
here and missing there fails a test instead of a deployment.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    name: str
    """``scimbus <name>``; also the package ``services.<name>``, the compose service and the
    Kubernetes workload ``scimbus-<name>``."""
    serves: str
    """How it runs: ``http`` (gunicorn), ``pool`` (RQ workers under one parent) or ``loop``."""
    summary: str


ROLES: tuple[Role, ...] = (
    Role("front", "http", "Serve SCIM writes, queued for the workers (gunicorn)"),
    Role("reader", "http", "Serve SCIM reads from the database (gunicorn)"),
    Role("worker", "pool", "Apply the queued writes to the database (RQ pool)"),
    Role("deliverer", "pool", "Deliver committed changes to the connectors (RQ pool)"),
    Role("sweeper", "loop", "Re-queue due and lost deliveries (one active at a time)"),
)

NAMES: tuple[str, ...] = tuple(role.name for role in ROLES)
