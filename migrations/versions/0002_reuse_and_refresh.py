"""Input hash (reuse of done results), output-URL refresh count, learned generation times.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("input_hash", sa.String(64), nullable=True))
        batch.add_column(sa.Column("url_refreshes", sa.Integer, nullable=False, server_default="0"))
        batch.create_index("ix_jobs_input_hash_state", ["input_hash", "state"])
        batch.create_index("ix_jobs_model_ready", ["model", "ready_at"])


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_model_ready")
        batch.drop_index("ix_jobs_input_hash_state")
        batch.drop_column("url_refreshes")
        batch.drop_column("input_hash")
