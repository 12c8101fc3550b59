"""Campaigns and jobs.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "campaigns",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("halted", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "campaign",
            sa.String(64),
            sa.ForeignKey("campaigns.name", name="fk_jobs_campaign"),
            nullable=False,
        ),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("model", sa.String(300), nullable=False),
        sa.Column("input", sa.JSON, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("polls", sa.Integer, nullable=False, server_default="0"),
        sa.Column("strikes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("remote_id", sa.String(200), nullable=True),
        sa.Column("polling_url", sa.Text, nullable=True),
        sa.Column("output_urls", sa.JSON, nullable=True),
        sa.Column("files", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("cost", sa.Float, nullable=True),
        sa.Column("next_attempt_at", sa.Float, nullable=False, server_default="0"),
        sa.Column("deadline_at", sa.Float, nullable=True),
        sa.Column("submitted_at", sa.Float, nullable=True),
        sa.Column("ready_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("lease_owner", sa.String(200), nullable=True),
        sa.Column("lease_expires_at", sa.Float, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("campaign", "key", name="uq_jobs_campaign_key"),
    )
    op.create_index("ix_jobs_state_due", "jobs", ["state", "next_attempt_at"])
    op.create_index("ix_jobs_campaign_state", "jobs", ["campaign", "state"])
    op.create_index("ix_jobs_lease_owner", "jobs", ["lease_owner"])


def downgrade() -> None:
    op.drop_table("jobs")
    op.drop_table("campaigns")
