"""Persistence: the job table and everything that reads or writes it."""

from runner.store.store import (
    DatabaseError,
    EnqueueResult,
    Store,
    open_reader,
    open_store,
    peek_store,
    resolve_db,
)

__all__ = [
    "DatabaseError",
    "EnqueueResult",
    "Store",
    "open_reader",
    "open_store",
    "peek_store",
    "resolve_db",
]
