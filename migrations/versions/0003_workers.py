"""Worker rows (who is working, since when, last seen); indexes for `runner status`.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("campaigns", sa.JSON, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("last_seen_at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("jobs") as batch:
        # Cost per campaign and state, read from the index alone.
        batch.drop_index("ix_jobs_campaign_state")
        batch.create_index("ix_jobs_campaign_state_cost", ["campaign", "state", "cost"])
        # Images per minute lately: only the recent finishes are read.
        batch.create_index("ix_jobs_campaign_finished", ["campaign", "finished_at"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_campaign_finished")
        batch.drop_index("ix_jobs_campaign_state_cost")
        batch.create_index("ix_jobs_campaign_state", ["campaign", "state"])
    op.drop_table("workers")
