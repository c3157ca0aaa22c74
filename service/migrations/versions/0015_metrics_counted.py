"""metrics_counted: the ledger rows as the metric tables counted them (incremental refresh)

An incremental refresh recounts only the customers the projector marked: it subtracts
what their old rows contributed (kept here, since the projector rewrites the ledger in
place) and adds what their new rows contribute. `metrics_refreshes.counted` says whether
this table matches an account's metric tables; existing accounts start False, so their
next refresh recomputes them whole and fills it.

Revision ID: 0015_metrics_counted
Revises: 0014_plan_names
Create Date: 2026-12-02 19:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_metrics_counted"
down_revision = "0014_plan_names"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metrics_counted",
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("reporting_currency", sa.String(length=3), nullable=False),
        sa.Column("segment", sa.String(length=32), nullable=False),
        sa.Column("movement", sa.String(length=16), nullable=False),
        sa.Column("from_mrr", sa.BigInteger(), nullable=False),
        sa.Column("to_mrr", sa.BigInteger(), nullable=False),
        sa.Column("delta_reporting", sa.BigInteger(), nullable=True),
        sa.Column("churn_reason", sa.String(length=16), nullable=True),
        sa.Column("churn_feedback", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("account", "customer_id", "currency", "day"),
    )
    with op.batch_alter_table("metrics_refreshes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("counted", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("metrics_refreshes", schema=None) as batch_op:
        batch_op.drop_column("counted")
    op.drop_table("metrics_counted")
