"""Shared fixtures. Waits in the runner are scaled down for the suite (RUNNER_TIME_SCALE).

Database tests run on SQLite always and on PostgreSQL when `RUNNER_TEST_PG_URL` names a
server (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test); each PostgreSQL test gets a
schema of its own, dropped afterwards. Without the URL those tests skip with the reason, unless
`RUNNER_REQUIRE_PG=1` (set by .ci/run), which turns any such skip into a failed run.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

os.environ.setdefault("RUNNER_TIME_SCALE", "0.05")

PG_ENV = "RUNNER_TEST_PG_URL"


def _pg_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def pg_schema() -> Iterator[str]:
    """A PostgreSQL schema of its own (URL with its search_path), dropped afterwards."""
    base = os.environ.get(PG_ENV)
    if not base:
        pytest.skip(f"{PG_ENV} is not set: no PostgreSQL server to test against")
    schema = f"t_{secrets.token_hex(6)}"
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield _pg_schema_url(base, schema)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield str(tmp_path / "runner.db")
        return
    with pg_schema() as url:
        yield url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema (tests using it carry the `postgres` mark)."""
    with pg_schema() as url:
        yield url


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """On CI a PostgreSQL test that skipped is a failure: the server is supposed to be there."""
    if os.environ.get("RUNNER_REQUIRE_PG") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    missed = [r.nodeid for r in skipped if "postgres" in r.keywords]
    if missed:
        print(f"\nRUNNER_REQUIRE_PG=1 but {len(missed)} PostgreSQL test(s) skipped: {missed[:3]}")
        session.exitstatus = 1
