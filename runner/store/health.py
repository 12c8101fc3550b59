"""Whether a database is fit to use, and the one paragraph that says why not. No I/O.

runner must tell a brand-new database from one that lost its tables (a deleted `-wal` file, a
dropped schema): the first is set up, the second would be set up too and every job of its
campaigns bought again. The rules:

- a SQLite file that is missing or empty (0 bytes) is new: runner makes it (`opening.py`
  builds a new file beside it and renames it into place, so a file that exists and is not
  empty has always held runner's tables);
- a SQLite file that is not empty and lacks runner's tables lost them (or is someone else's
  database, when it holds tables of its own); a server database that holds some of runner's
  tables but not all lost the others;
- a server database without any of runner's tables is new, unless the output folder of the
  campaign being submitted holds its sidecars (`runner.store.recovery`).

Each message names the database and what to do; it is shown as one paragraph with exit code 2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

SQLITE_HEADER = b"SQLite format 3\x00"

# The tables every revision of runner's schema has; `accounts` and `workers` came later.
CORE_TABLES = frozenset({"alembic_version", "campaigns", "jobs"})
RUNNER_TABLES = CORE_TABLES | {"workers", "accounts"}

Kind = Literal["new", "runner", "lost", "foreign"]
Access = Literal["write", "read", "immutable"]


class DatabaseError(Exception):
    """The database cannot be used as asked (missing, not a runner database, too new, damaged,
    read-only, lost its tables). The message is one paragraph for the user."""


def kind_of(tables: frozenset[str], *, file_bytes: int | None) -> Kind:
    """What a database is, from the tables it holds; `file_bytes` is a SQLite file's size
    (None for a server, whose databases hold other applications' tables as well)."""
    if tables >= CORE_TABLES:
        return "runner"
    if tables & RUNNER_TABLES:
        return "lost"
    if file_bytes is None:
        return "new"
    if not tables:
        return "new" if file_bytes == 0 else "lost"
    return "foreign"


def sqlite_access(
    *, file_writable: bool, folder_writable: bool, wal_exists: bool, shm_exists: bool
) -> Access:
    """How to open a SQLite file that exists: for writing, read-only, or as immutable.

    SQLite reads a WAL-mode database read-only when its `-wal` and `-shm` files exist or can
    be created (https://sqlite.org/wal.html, "Read-Only Databases"). On a read-only mount
    without them, only `immutable=1` opens it, which is safe exactly then: with no `-wal`
    file nothing committed lives outside the main file, and nobody can write it meanwhile.
    Raises DatabaseError when it cannot be read at all (a `-wal` file without its `-shm` on a
    read-only folder: immutable would ignore what the `-wal` holds).
    """
    if file_writable and folder_writable:
        return "write"
    if folder_writable or (wal_exists and shm_exists):
        return "read"
    if not wal_exists:
        return "immutable"
    raise DatabaseError(
        "has a write-ahead log (its -wal file) but no -shm file, in a folder runner cannot "
        "write to: SQLite cannot read it there without losing what the log holds"
    )


@dataclass(frozen=True)
class Place:
    """Where the database is, as messages name it."""

    shown: str  # the path, or the URL without its password
    sqlite: bool

    @property
    def wal(self) -> str:
        return f"{self.shown}-wal"


def _keep_a_copy(place: Place) -> str:
    if place.sqlite:
        return f"Keep a copy of {place.shown} (and of {place.wal}, if there is one) first."
    return "Keep a dump of the database (pg_dump) first."


def damaged(place: Place, detail: str) -> str:
    repair = (
        f"`sqlite3 {place.shown} .recover | sqlite3 recovered.db` saves what can still be read "
        "into a new file, which `--db recovered.db` then uses"
        if place.sqlite
        else "restore it from a backup"
    )
    return (
        f"the database at {place.shown} is damaged ({detail}), so runner neither reads nor "
        f"writes it: nothing was changed. {_keep_a_copy(place)} Then {repair}; or restore "
        "it from a backup. The images already saved and their .json sidecars are not "
        "affected: `runner submit JOBFILE --from-sidecars` on a new database records them "
        "as done instead of paying for them again."
    )


def not_sqlite(place: Place) -> str:
    return (
        f"{place.shown} does not start with SQLite's header: it is not a SQLite database, "
        "or its first page is damaged. runner did not touch it. Pass --db with the path of "
        "runner's database (by default runner.db beside the job file); if this is it, keep a "
        "copy and restore it from a backup, or see `runner submit --help` for --from-sidecars."
    )


def foreign(place: Place, tables: frozenset[str]) -> str:
    names = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    return (
        f"{place.shown} is a SQLite database, but not runner's: it has none of runner's "
        f"tables and tables of its own ({names}). Nothing was changed. Pass --db with the "
        "path of runner's database, or a path where runner may create a new one."
    )


def lost(place: Place, tables: frozenset[str]) -> str:
    if tables:
        what = f"holds only some of runner's tables ({', '.join(sorted(tables))})"
    elif place.sqlite:
        what = "is not empty but holds none of runner's tables"
    else:
        what = "holds none of runner's tables"
    cause = (
        f"a deleted {place.wal} file does this, when it held what was not yet written back "
        "into the main file"
        if place.sqlite
        else "tables were dropped"
    )
    aside = (
        f"move {place.shown} aside (and {place.wal}, if there is one)"
        if place.sqlite
        else "drop what is left of runner's tables (or use an empty database)"
    )
    return (
        f"the database at {place.shown} {what}: its tables were lost ({cause}). runner does "
        "not set it up again, which would queue every job of its campaigns to be bought "
        f"again: nothing was changed. {_keep_a_copy(place)} Restore it from a backup if "
        f"there is one; otherwise {aside} and run `runner submit JOBFILE --from-sidecars` "
        "for each job file: jobs whose image and .json sidecar are in the output folder are "
        "recorded as done (their sha256 checked), and only the others are queued."
    )


def no_tables(place: Place) -> str:
    return (
        f"the database at {place.shown} holds no runner tables: no job file was submitted "
        "to it yet, or its tables were dropped. Nothing was changed. Pass --db (or set "
        "RUNNER_DB) to the database your campaigns are in, or run a job file "
        "(`runner run JOBFILE`) to set this one up."
    )


def read_only(place: Place, reason: str, *, writes: str = "this command writes to it") -> str:
    return (
        f"the database at {place.shown} is read-only here ({reason}), and {writes}: nothing "
        "was changed. Make it writable, or copy it (with its -wal "
        "file, if there is one) to a writable folder and pass --db with the copy. `runner "
        "status`, `jobs`, `export` and `gallery` read it as it is."
    )


def unreadable(place: Place, reason: str) -> str:
    return (
        f"the database at {place.shown} cannot be read here: it {reason}. Nothing was "
        f"changed. Copy {place.shown} together with its -wal and -shm files to a writable "
        "folder and pass --db with the copy."
    )


def explain(message: str, place: Place) -> str | None:
    """The paragraph for an error the database driver raised, when it is one of the faults
    a user meets (a damaged file, a read-only one, lost tables, a full disk); None for the
    others (a bug, which deserves its traceback)."""
    text = message.lower()
    first = message.strip().splitlines()[0] if message.strip() else message
    if any(
        sign in text
        for sign in (
            "database disk image is malformed",
            "malformed database schema",
            "file is not a database",
            "database corruption",
        )
    ):
        return damaged(place, first)
    if "readonly database" in text or "read-only file system" in text:
        return read_only(place, first)
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        return lost(place, frozenset())
    if "unable to open database file" in text:
        return unreadable(place, "could not be opened (SQLite: unable to open database file)")
    if "database or disk is full" in text or "no space left on device" in text:
        return (
            f"the disk holding the database at {place.shown} is full ({first}): the change "
            "was not written. Free some space and run the same command again."
        )
    if "disk i/o error" in text:
        return (
            f"reading or writing the database at {place.shown} failed with a disk I/O error "
            f"({first}). {_keep_a_copy(place)} Check the disk (dmesg), then run `runner "
            "doctor` to see whether the database is whole."
        )
    if "connection refused" in text or "could not connect" in text or "connection failed" in text:
        return (
            f"cannot connect to the database server at {place.shown} ({first}). Check that "
            "it runs and the URL (--db or RUNNER_DB), then run the same command again."
        )
    return None
