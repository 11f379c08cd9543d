"""Creating and upgrading the store's tables with Alembic, beside Optuna's and without touching them.

Optuna migrates its own tables with Alembic too, recording its revision in the default version
table ``alembic_version``.  The store records its revision in :data:`VERSION_TABLE` instead, so
the two histories never mix and each tool upgrades only what it owns.  There is no
``alembic.ini``: :func:`alembic_config` builds the configuration here, so a worker needs only
the database URL.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

import splitsearch
from splitsearch.store.models import TABLE_PREFIX

VERSION_TABLE = TABLE_PREFIX + "alembic_version"


def script_location() -> Path:
    """The repository's ``alembic/`` folder, which holds the migration scripts.

    The folder sits beside the package in the source checkout and is not part of a built wheel,
    so the store needs an editable install of the checkout.

    Raises:
        RuntimeError: the folder is not there.
    """
    location = Path(splitsearch.__file__).resolve().parents[1] / "alembic"
    if not (location / "env.py").is_file():
        raise RuntimeError(
            f"the store migrations are missing: expected them in {location}. They ship with the "
            "source checkout, not the installed package; install the checkout with pip install -e ."
        )
    return location


def alembic_config(url: str) -> Config:
    """An Alembic configuration for the store of the database at ``url``.

    The URL travels in ``config.attributes`` rather than as an ini option, where ``%`` signs of
    an encoded password would be read as interpolation.
    """
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["url"] = url
    return config


def upgrade(url: str) -> None:
    """Create or upgrade the store's tables to the newest revision; does nothing when current.

    Every worker may call it at start-up: on PostgreSQL concurrent calls wait for each other
    (see ``alembic/env.py``), and Optuna's tables are left as they are.  Within one process,
    call it from one thread at a time: Alembic keeps its migration context in a global.
    """
    command.upgrade(alembic_config(url), "head")


def current_revision(url: str) -> str | None:
    """The store's revision in the database at ``url``; ``None`` before the first upgrade."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()
    finally:
        engine.dispose()


def is_store_object(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
    """Alembic ``include_name`` hook: autogenerate must compare only the store's own tables.

    Without it, autogenerate would see Optuna's tables in the same database, missing from the
    store's metadata, and propose to drop them.
    """
    return type_ != "table" or (name or "").startswith(TABLE_PREFIX)
