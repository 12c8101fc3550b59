"""Opening a database: how (for writing, read-only, immutable), what is there before anything
is written (new, runner's, lost, someone else's, damaged), making a new SQLite file, and the
engines, whose driver errors come out as one paragraph (`DatabaseError`).

The decisions are `runner.store.health`'s; this module only looks and opens. Looking writes
nothing: a read-only connection reads the tables, the schema revision and, on SQLite,
`PRAGMA quick_check` (every page once: a damaged file is never written to, and never read as
if whole).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from runner.store import health
from runner.store.health import Access, DatabaseError, Kind, Place

BUSY_TIMEOUT_MS = 30_000


def database_url(db: str) -> str:
    """Accept a SQLAlchemy URL or a plain file path."""
    if "://" in db:
        return db
    return f"sqlite:///{Path(db).expanduser().resolve()}"


def sqlite_path(url: sa.URL) -> Path | None:
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


@dataclass(frozen=True)
class Target:
    url: str
    path: Path | None  # the SQLite file; None for a server (or SQLite in memory)
    place: Place

    @property
    def size(self) -> int | None:
        """The SQLite file's size; None when it does not exist (or is no file)."""
        if self.path is None:
            return None
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return None


def place_of(url: sa.URL) -> Place:
    path = sqlite_path(url)
    shown = str(path) if path is not None else url.render_as_string(hide_password=True)
    return Place(shown, sqlite=url.get_backend_name() == "sqlite")


def target(db: str) -> Target:
    url = database_url(db)
    path = sqlite_path(sa.make_url(url))
    target = Target(url, path, place_of(sa.make_url(url)))
    if path is not None and path.is_dir():
        raise DatabaseError(f"{path} is a folder, not a database file. Pass --db FILE.")
    return target


def missing(target: Target) -> DatabaseError:
    return DatabaseError(
        f"no runner database at {target.place.shown}. Pass --db with the right path or URL "
        "(or set RUNNER_DB), or run a job file first to create one."
    )


# -- how a SQLite file may be opened --------------------------------------------------------


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def _read_only_mount(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def access_of(path: Path) -> Access:
    """How this existing SQLite file can be opened here (`health.sqlite_access`)."""
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    try:
        return health.sqlite_access(
            file_writable=_writable(path),
            folder_writable=_writable(path.parent),
            wal_exists=wal.exists(),
            shm_exists=shm.exists(),
        )
    except DatabaseError as exc:
        raise DatabaseError(health.unreadable(Place(str(path), sqlite=True), str(exc))) from None


def why_read_only(path: Path) -> str:
    if _read_only_mount(path):
        return f"the file system holding {path.parent} is mounted read-only"
    if not _writable(path):
        return "the file is not writable"
    return f"its folder {path.parent} is not writable, and SQLite keeps its -wal file there"


def _connect_sqlite(path: Path, access: Access) -> sqlite3.Connection:
    """A connection of the sqlite3 driver that writes nothing ("read", "immutable"), or an
    ordinary one ("write")."""
    if access == "write":
        return sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    mode = "mode=ro&immutable=1" if access == "immutable" else "mode=ro"
    uri = f"file:{quote(str(path))}?{mode}"
    return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)


# -- what is there ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Found:
    kind: Kind
    tables: frozenset[str] = frozenset()
    revision: str | None = None


def look(target: Target, access: Access = "read", *, check: bool = True) -> Found:
    """What the database holds, writing nothing; on SQLite with `check`, also whether every
    page reads as whole (`PRAGMA quick_check`). Raises DatabaseError for a file that is not
    SQLite's, or damaged."""
    if target.path is None:
        return _look_at_server(target)
    size = target.size
    if size is None:
        raise missing(target)
    if size == 0:
        return Found("new")
    with target.path.open("rb") as fh:
        if fh.read(len(health.SQLITE_HEADER)) != health.SQLITE_HEADER:
            raise DatabaseError(health.not_sqlite(target.place))
    # Never open for writing to look: an ordinary connection may write (the -wal replayed).
    conn = _connect_sqlite(target.path, "read" if access == "write" else access)
    try:
        names = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        tables = frozenset(str(name) for (name,) in names)
        if check:
            problems = conn.execute("PRAGMA quick_check").fetchall()
            if problems != [("ok",)]:
                first = "; ".join(str(p) for (p,) in problems[:2])
                raise DatabaseError(health.damaged(target.place, f"SQLite's check: {first}"))
        revision = None
        if "alembic_version" in tables:
            revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error as exc:
        raise _translated(exc, target.place) from exc
    finally:
        conn.close()
    version = None if revision is None else str(revision[0])
    return Found(health.kind_of(tables, file_bytes=size), tables, version)


def _look_at_server(target: Target) -> Found:
    engine = sa.create_engine(target.url)
    _explain_errors(engine, target.place)
    try:
        with engine.connect() as conn:
            tables = frozenset(sa.inspect(conn).get_table_names())
            revision = None
            if "alembic_version" in tables:
                query = sa.text("SELECT version_num FROM alembic_version")
                revision = conn.execute(query).scalar()
    except sa.exc.DBAPIError as exc:
        raise DatabaseError(
            f"cannot read the database at {target.place.shown}: {exc.orig}"
        ) from exc
    finally:
        engine.dispose()
    return Found(health.kind_of(tables, file_bytes=None), tables, revision)


def refuse_unfit(target: Target, found: Found) -> None:
    """A database that lost its tables, or is someone else's, is never set up or used."""
    if found.kind == "lost":
        raise DatabaseError(health.lost(target.place, found.tables & health.RUNNER_TABLES))
    if found.kind == "foreign":
        raise DatabaseError(health.foreign(target.place, found.tables))


def _translated(exc: BaseException, place: Place) -> DatabaseError:
    text = health.explain(str(exc), place)
    if text is None:
        text = f"cannot read the database at {place.shown}: {exc}"
    return DatabaseError(text)


# -- engines -----------------------------------------------------------------------------------


def _explain_errors(engine: Engine, place: Place) -> None:
    """A driver error that is a fault the user meets (damaged, read-only, tables gone, disk
    full) leaves every statement as one paragraph, not a stack of SQLAlchemy frames."""

    @sa.event.listens_for(engine, "handle_error")
    def _explain(context: Any) -> None:
        text = health.explain(str(context.original_exception), place)
        if text is not None:
            raise DatabaseError(text) from context.original_exception


def make_engine(target: Target, access: Access = "write") -> Engine:
    if target.path is None:
        engine = sa.create_engine(target.url, pool_pre_ping=True)
        _explain_errors(engine, target.place)
        return engine
    path = target.path
    connect_args = {"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    if access == "write":
        engine = sa.create_engine(target.url, connect_args=connect_args)
    else:
        engine = sa.create_engine(target.url, creator=lambda: _connect_sqlite(path, access))
    writes = access == "write"

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event, not pysqlite, decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if writes:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        else:
            cursor.execute("PRAGMA query_only=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        if conn.get_execution_options().get("readonly"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    _explain_errors(engine, target.place)
    return engine


@contextlib.contextmanager
def opening(path: Path | None) -> Iterator[None]:
    """One process at a time sets up a SQLite file: switching a new file to WAL fails at once
    ("database is locked", without waiting) while another connection does the same.

    The lock is taken on the folder, never on the database file: closing any descriptor of the
    database file would drop the POSIX locks SQLite's own connections in this process hold on
    it, and another process could then delete the WAL under them.
    """
    if path is None:
        yield
        return
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the flock


def make_sqlite(target: Target, migrate: Callable[[Engine], None]) -> None:
    """Make a new SQLite database at the target's path, with runner's tables.

    It is built beside the path and renamed into place once its tables are in it, so a file
    at the path that is not empty has always held runner's tables: one that no longer does
    lost them (`health`). Owner-only from the first byte: it records prompts and provider URLs.
    """
    path = target.path
    assert path is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    with opening(path):
        if target.size:  # made by another process meanwhile
            return
        building = path.with_name(f".{path.name}.new-{os.getpid()}")
        for leftover in _with_logs(building):
            leftover.unlink(missing_ok=True)
        os.close(os.open(building, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
        try:
            engine = make_engine(Target(database_url(str(building)), building, target.place))
            try:
                migrate(engine)
                raw = engine.raw_connection()
                try:  # all back into the main file: the -wal is not renamed with it
                    raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # type: ignore[union-attr]
                finally:
                    raw.close()
            finally:
                engine.dispose()
            if Path(f"{building}-wal").exists() and Path(f"{building}-wal").stat().st_size:
                raise DatabaseError(f"could not set up a new database at {path}: try again")
            os.replace(building, path)
        finally:
            for leftover in _with_logs(building):
                leftover.unlink(missing_ok=True)


def _with_logs(path: Path) -> list[Path]:
    return [path, Path(f"{path}-wal"), Path(f"{path}-shm"), Path(f"{path}-journal")]
