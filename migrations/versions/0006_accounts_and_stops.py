"""What runner learns about each provider account; remote ids indexed; workers that stop.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

- `accounts`: one row per provider account (style, base URL, key variable), holding what was
  learned about it as JSON: routes it answered 404/405 to (so the next run does not rely on
  them), and later figures such as its clock offset.
- `ix_jobs_remote_id`: reconciliation asks which listed predictions some job already holds (a
  prediction held by one job is never adopted by another); webhooks find their job by it.
- `workers.stopping`: a worker that was told to stop and is finishing what was already paid
  for says so here (since when, until when at most, why), for `runner status`.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("key", sa.String(1000), primary_key=True),
        sa.Column("facts", sa.JSON, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    where = sa.text("remote_id IS NOT NULL")
    op.create_index(
        "ix_jobs_remote_id", "jobs", ["remote_id"], sqlite_where=where, postgresql_where=where
    )
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("stopping", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("stopping")
    op.drop_index("ix_jobs_remote_id", table_name="jobs")
    op.drop_table("accounts")
