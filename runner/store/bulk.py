"""One statement for many rows, run by the database driver itself (`Store.enqueue`, and the
moves of `runner.store.continuing`)."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def execute_many(
    conn: Connection,
    stmt: sa.Insert | sa.Update,
    columns: Sequence[str],
    rows: list[tuple[Any, ...]],
) -> None:
    """Run `stmt` once for each row (values of `columns`: an INSERT's columns, or the names of
    an UPDATE's bound parameters), in one executemany call of the database driver.

    `conn.execute(stmt, rows)` does the same, but first binds each row's parameters one by one
    in Python: for 100,000 jobs that takes as long as SQLite's insert itself. The rows hold plain
    values only (their JSON already encoded), so there is nothing for SQLAlchemy to convert.
    """
    keys = list(columns) if isinstance(stmt, sa.Insert) else None
    compiled = stmt.compile(dialect=conn.dialect, column_keys=keys)
    params: list[Any]
    if not compiled.positional:  # named parameters (PostgreSQL)
        params = [dict(zip(columns, row, strict=True)) for row in rows]
    elif list(compiled.positiontup or ()) == list(columns):
        params = rows
    else:
        in_order = operator.itemgetter(*(columns.index(c) for c in compiled.positiontup or ()))
        params = [in_order(row) for row in rows]
    conn.exec_driver_sql(compiled.string, params)
