"""Telling a new database from one that lost its tables, how to open a read-only one, and the
paragraph for each fault the driver reports (`runner.store.health`). No I/O."""

from __future__ import annotations

import pytest

from runner.store import health
from runner.store.health import DatabaseError, Place

SQLITE = Place("/srv/c/runner.db", sqlite=True)
SERVER = Place("postgresql+psycopg://runner:***@db/runner", sqlite=False)
EVERY = frozenset({"alembic_version", "campaigns", "jobs", "workers", "accounts"})


@pytest.mark.parametrize(
    ("tables", "size", "kind"),
    [
        (frozenset(), 0, "new"),  # made by `open`, or touched: nothing was ever in it
        (frozenset(), 4096, "lost"),  # a header and no tables: a deleted -wal file
        (EVERY, 4096, "runner"),
        (frozenset({"alembic_version", "campaigns", "jobs"}), 8192, "runner"),  # revision 0001
        (frozenset({"campaigns", "workers", "accounts", "alembic_version"}), 8192, "lost"),
        (frozenset({"jobs"}), 8192, "lost"),
        (frozenset({"orders", "customers"}), 8192, "foreign"),
        (frozenset(), None, "new"),  # a server schema without tables
        (frozenset({"orders"}), None, "new"),  # a server database shared with others
        (frozenset({"orders", "jobs", "campaigns"}), None, "lost"),  # no alembic_version
        (EVERY | {"orders"}, None, "runner"),
    ],
)
def test_kind_of_a_database(tables: frozenset[str], size: int | None, kind: str) -> None:
    assert health.kind_of(tables, file_bytes=size) == kind


@pytest.mark.parametrize(
    ("file_w", "folder_w", "wal", "shm", "access"),
    [
        (True, True, False, False, "write"),
        (True, True, True, True, "write"),
        (False, True, False, False, "read"),  # a read-only file: SQLite makes its -shm beside it
        (False, True, True, True, "read"),
        (
            True,
            False,
            False,
            False,
            "immutable",
        ),  # a folder it cannot write: no -wal, nothing outside
        (False, False, False, False, "immutable"),  # a read-only mount, closed cleanly
        (False, False, True, True, "read"),  # a read-only mount of a live copy: read its -wal
    ],
)
def test_how_a_sqlite_file_is_opened(
    file_w: bool, folder_w: bool, wal: bool, shm: bool, access: str
) -> None:
    assert (
        health.sqlite_access(
            file_writable=file_w, folder_writable=folder_w, wal_exists=wal, shm_exists=shm
        )
        == access
    )


def test_a_wal_without_its_shm_on_a_read_only_folder_cannot_be_read_without_losing_it() -> None:
    """immutable=1 would open it, and silently ignore what the -wal holds."""
    with pytest.raises(DatabaseError, match="-shm"):
        health.sqlite_access(
            file_writable=False, folder_writable=False, wal_exists=True, shm_exists=False
        )


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ("database disk image is malformed", ["damaged", ".recover", "/srv/c/runner.db-wal"]),
        ("file is not a database", ["damaged"]),
        ("malformed database schema (jobs) - invalid rootpage", ["damaged"]),
        ("attempt to write a readonly database", ["read-only", "status"]),
        ("no such table: jobs", ["tables were lost", "--from-sidecars"]),
        ("unable to open database file", ["cannot be read here"]),
        ("database or disk is full", ["full", "Free some space"]),
        ("disk I/O error", ["disk I/O error", "runner doctor"]),
    ],
)
def test_driver_errors_become_one_paragraph_naming_the_database(
    message: str, words: list[str]
) -> None:
    text = health.explain(message, SQLITE)
    assert text is not None and "\n" not in text
    assert SQLITE.shown in text
    for word in words:
        assert word in text


def test_server_errors_name_the_url_without_its_password() -> None:
    text = health.explain('relation "jobs" does not exist', SERVER)
    assert text is not None and "tables were lost" in text and "***" in text
    refused = health.explain("connection failed: Connection refused", SERVER)
    assert refused is not None and "cannot connect" in refused


def test_other_errors_are_left_alone() -> None:
    """A bug keeps its traceback: only the faults a user meets become a paragraph."""
    assert health.explain("UNIQUE constraint failed: jobs.campaign, jobs.key", SQLITE) is None
    assert health.explain('near "SELEC": syntax error', SQLITE) is None


def test_the_lost_paragraph_says_what_happened_and_how_to_recover() -> None:
    text = health.lost(SQLITE, frozenset())
    assert "not empty but holds none of runner's tables" in text
    assert "-wal" in text and "nothing was changed" in text
    assert "move /srv/c/runner.db aside" in text and "--from-sidecars" in text
    partial = health.lost(SERVER, frozenset({"campaigns", "workers"}))
    assert "only some of runner's tables (campaigns, workers)" in partial
    assert "pg_dump" in partial
