"""The tables, as SQLAlchemy Core metadata. Alembic migrations must produce exactly this.

Times are epoch seconds (REAL / double precision): every decision function works on plain
floats, and both SQLite and PostgreSQL compare them with the same indexes.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from runner.bounds import MAX_ID

metadata = sa.MetaData()

# The newest migration: the tables below are what it leaves (a test checks both).
SCHEMA_REVISION = "0007"

campaigns = sa.Table(
    "campaigns",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("halted", sa.Text, nullable=True),  # why work stopped (bad key, no credit)
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)


def not_null(column: str) -> dict[str, Any]:
    """The options of a partial index holding only the rows where `column` is not NULL."""
    where = sa.text(f"{column} IS NOT NULL")
    return {"sqlite_where": where, "postgresql_where": where}


jobs = sa.Table(
    "jobs",
    metadata,
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
    sa.Column("remote_id", sa.String(MAX_ID), nullable=True),  # longer ids are refused
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
    # sha256 of (provider, model, input): finds a done job with the very same input (reuse).
    sa.Column("input_hash", sa.String(64), nullable=True),
    # How often the output URLs were re-read because a download found them gone.
    sa.Column("url_refreshes", sa.Integer, nullable=False, server_default="0"),
    # When the result became ready, less when it was submitted, as well as the looks at it
    # tell (the poll schedule learns from it); NULL when they tell too little.
    sa.Column("generation_s", sa.Float, nullable=True),
    # Unexpected errors (bugs) met while handling the job since its state last changed: a few
    # are retried, then the job is given up (runner.states.on_bug).
    sa.Column("bugs", sa.Integer, nullable=False, server_default="0"),
    sa.UniqueConstraint("campaign", "key", name="uq_jobs_campaign_key"),
    # Claiming: due jobs of a state, oldest due first.
    sa.Index("ix_jobs_state_due", "state", "next_attempt_at"),
    # Status: counts and cost per campaign and state, and the recent finishes.
    sa.Index("ix_jobs_campaign_state_cost", "campaign", "state", "cost"),
    # The indexes of columns that a queued job leaves NULL hold only the rows that have a value
    # (a condition every query of them implies), so enqueueing does not write to them.
    sa.Index("ix_jobs_campaign_finished", "campaign", "finished_at", **not_null("finished_at")),
    sa.Index("ix_jobs_lease_owner", "lease_owner", **not_null("lease_owner")),
    sa.Index("ix_jobs_input_hash_state", "input_hash", "state"),
    # Learning generation times: the most recent finished jobs of a model.
    sa.Index("ix_jobs_model_ready", "model", "ready_at", **not_null("ready_at")),
    # Which predictions some job holds (reconciliation never adopts those), and webhooks.
    sa.Index("ix_jobs_remote_id", "remote_id", **not_null("remote_id")),
)

# Every `runner run` / `runner work` process, so `runner status` shows who is working and each
# worker knows how many others share a provider account's create rate.
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),  # the lease owner name
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("campaigns", sa.JSON, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("last_seen_at", sa.Float, nullable=False),
    # Set while the worker stops: finishing what was paid for ({since, until, reason}).
    sa.Column("stopping", sa.JSON, nullable=True),
)

# What was learned about each provider account (its `ProviderConfig.account`, joined by ":"):
# routes it does not serve, and other figures, as JSON. Kept across runs.
accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("key", sa.String(1000), primary_key=True),
    sa.Column("facts", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
