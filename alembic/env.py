"""Alembic environment of the splitsearch store (see :mod:`splitsearch.store.migrations`).

Runs online only, on the URL that :func:`splitsearch.store.migrations.alembic_config` put in
``config.attributes`` (or an ``sqlalchemy.url`` option, for a hand-made configuration), with the
store's own version table so that Optuna's ``alembic_version`` is never read or written.
"""

from alembic import context
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from splitsearch.store.migrations import VERSION_TABLE, is_store_object
from splitsearch.store.models import Base

# Any constant shared by all workers: the key of the PostgreSQL advisory lock held while migrating.
_MIGRATION_LOCK_KEY = 0x5B117_5EA7C4


def run_migrations() -> None:
    url = context.config.attributes.get("url") or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError(
            "no database URL: build the configuration with splitsearch.store.migrations.alembic_config")
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=Base.metadata,
                version_table=VERSION_TABLE,
                include_name=is_store_object,
            )
            with context.begin_transaction():
                if connection.dialect.name == "postgresql":
                    # Workers starting together would otherwise all see an empty database and
                    # race to create the same tables; the lock ends with the transaction.
                    lock = text("SELECT pg_advisory_xact_lock(:key)")
                    connection.execute(lock, {"key": _MIGRATION_LOCK_KEY})
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise RuntimeError("the splitsearch store migrations run online only (no --sql)")
run_migrations()
