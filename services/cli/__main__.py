"""``python -m services.cli``: the ``scimbus`` command without the installed entry point."""

from services.cli import main

main()
