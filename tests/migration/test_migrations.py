"""Migrations: empty to head, and the models match the migrated schema (no pending diff)."""

from __future__ import annotations

import threading

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from runner.store import open_store
from runner.store.migrate import current_revision, head_revision
from runner.store.schema import SCHEMA_REVISION, metadata


def test_empty_to_head_and_no_autogenerate_diff(db_url: str) -> None:
    store = open_store(db_url)
    assert current_revision(store.engine) == head_revision() == SCHEMA_REVISION
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    tables = set(sa.inspect(store.engine).get_table_names())
    assert {"jobs", "campaigns", "alembic_version"} <= tables
    store.close()


def test_opening_twice_does_not_migrate_again(db_url: str) -> None:
    db = db_url
    open_store(db).close()
    store = open_store(db)
    with store.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    store.close()


def test_workers_starting_at_once_migrate_once(db_url: str) -> None:
    """Each worker migrates on open: four at once on an empty database must all succeed."""
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait(timeout=30)
        try:
            open_store(db_url).close()
        except BaseException as exc:  # collected: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    store = open_store(db_url)
    assert current_revision(store.engine) == head_revision()
    with store.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    store.close()
