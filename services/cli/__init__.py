"""The ``scimbus`` command: ``command`` is its root and the role subcommands, one module per
command group beside it (deliveries, security, init)."""

from services.cli.command import main

__all__ = ["main"]
