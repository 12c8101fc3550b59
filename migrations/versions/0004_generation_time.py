"""Each job's generation time as its looks tell it, for the poll schedule to learn from.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23

Until now the schedule learned submission-to-seen times, which carry each detection delay
into the next first look. Older rows keep NULL and are not learned from.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("generation_s", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("generation_s")
