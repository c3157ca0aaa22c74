"""closed_periods and restatements: months finance closed, and later changes to them

`POST /v1/periods/{YYYY-MM}/close` stores the month's figures; a refresh that finds them
changed records a restatement (old → new per metric, the events behind it).

Revision ID: 0016_closed_periods
Revises: 0015_metrics_counted
Create Date: 2026-12-02 19:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_closed_periods"
down_revision = "0015_metrics_counted"
branch_labels = None
depends_on = None

BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "closed_periods",
        sa.Column("account", sa.String(255), nullable=False),
        sa.Column("reporting_currency", sa.String(3), nullable=False),
        sa.Column("period", sa.Date(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("as_of", sa.BigInteger(), nullable=True),
        sa.Column("figures_at_close", sa.JSON(), nullable=False),
        sa.Column("figures", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("account", "reporting_currency", "period"),
    )
    op.create_table(
        "restatements",
        sa.Column("id", BigIntPK, autoincrement=True, nullable=False),
        sa.Column("account", sa.String(255), nullable=False),
        sa.Column("reporting_currency", sa.String(3), nullable=False),
        sa.Column("period", sa.Date(), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("event_ids", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_restatements_period", "restatements", ["account", "reporting_currency", "period"]
    )


def downgrade() -> None:
    op.drop_index("ix_restatements_period", table_name="restatements")
    op.drop_table("restatements")
    op.drop_table("closed_periods")
