"""Alembic migrations, applied by ``distill serve`` and ``distill up`` (see ``upgrade``)."""

from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).resolve().parent


def alembic_config(database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    if database_url is not None:
        config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str | None = None) -> None:
    """Bring the database to the newest schema."""
    command.upgrade(alembic_config(database_url), "head")
