"""Run the Alembic migrations programmatically (``scimbus migrate``, the tests, ``make run``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config

if TYPE_CHECKING:
    from libs.config import Settings

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would eat the '%' of URL-encoded options.
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head", settings: Settings | None = None) -> None:
    """``settings``: what a data migration needs besides the URL (0005 seals signing keys with
    their key encryption key); by default read from the environment, only if needed."""
    cfg = alembic_config(url)
    cfg.attributes["settings"] = settings
    command.upgrade(cfg, revision)


def downgrade(url: str, revision: str, settings: Settings | None = None) -> None:
    cfg = alembic_config(url)
    cfg.attributes["settings"] = settings
    command.downgrade(cfg, revision)
