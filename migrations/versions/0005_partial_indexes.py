"""Indexes of columns a queued job leaves NULL hold only the rows with a value.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

A lease owner, a ready time and a finish time are NULL for every queued job, so enqueueing
100,000 jobs wrote 300,000 index entries that no query reads: each query of these indexes
compares the column, which implies it is not NULL, so the partial indexes serve them alike.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEXES = {
    "ix_jobs_campaign_finished": ("campaign", "finished_at"),
    "ix_jobs_lease_owner": ("lease_owner",),
    "ix_jobs_model_ready": ("model", "ready_at"),
}


def _recreate(partial: bool) -> None:
    for name, columns in INDEXES.items():
        op.drop_index(name, table_name="jobs")
        where = sa.text(f"{columns[-1]} IS NOT NULL") if partial else None
        op.create_index(name, "jobs", list(columns), sqlite_where=where, postgresql_where=where)


def upgrade() -> None:
    _recreate(partial=True)


def downgrade() -> None:
    _recreate(partial=False)
