"""Applies the Alembic migrations in the top-level `migrations/` folder.

An installed wheel carries them as `runner/_migrations`; a source checkout uses the folder
beside the package. Upgrading runs inside one write transaction that first takes the database's
write lock (BEGIN IMMEDIATE on SQLite, a transaction-scoped advisory lock on PostgreSQL), so two
processes opening a new database at once migrate it once: the second waits, then finds it
current.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.store.schema import SCHEMA_REVISION

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATION_LOCK = 0x72756E6E  # the PostgreSQL advisory lock key of `runner db upgrade`


def migrations_dir() -> Path:
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if (candidate / "env.py").exists():
            return candidate
    raise FileNotFoundError("the runner's migrations folder is missing from this installation")


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    return config


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The database's revision; None for a database without runner's tables yet."""
    with engine.connect().execution_options(readonly=True) as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, revision: str = "head") -> None:
    # The common case, a current database, costs one query and never imports alembic.
    if revision == "head" and current_revision(engine) == SCHEMA_REVISION:
        return
    from alembic import command

    config = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Released at commit; alembic reads the revision again once it holds the lock.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
