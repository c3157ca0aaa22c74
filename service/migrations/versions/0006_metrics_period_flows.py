"""metrics: period flows and customer-days in metrics_periods, read indexes

The metrics API answers week-to-year queries from `metrics_periods` alone (issue 7: one
row per segment and period instead of one per day). Existing rows lack the new columns'
values and cannot be derived here (customer-days need the per-customer flips), so every
precomputed table is emptied together with `metrics_refreshes`: the API answers "never
computed" until the next `churn-ledger jobs run`, which recomputes every account with
ledger rows. They are derived data, rebuilt from the ledger at any time.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 12:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

DERIVED = (
    "metrics_segments",
    "metrics_daily",
    "metrics_periods",
    "metrics_churn_daily",
    "metrics_cohorts",
    "metrics_refreshes",
)
AMOUNTS = ("new_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr", "reactivation_mrr")
COUNTS = (
    "new_customers",
    "reactivated_customers",
    "churned_customers",
    "expansions",
    "contractions",
    "unconverted_movements",
)


def _empty_derived_tables() -> None:
    for table in DERIVED:
        op.execute(sa.text(f"DELETE FROM {table}"))


def upgrade() -> None:
    _empty_derived_tables()
    # server_default only so that the NOT NULL columns can be added; the job writes
    # every value.
    with op.batch_alter_table("metrics_periods", schema=None) as batch_op:
        for name in AMOUNTS:
            batch_op.add_column(
                sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")
            )
        for name in COUNTS:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(
            sa.Column("customer_days", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.create_index(
            "ix_metrics_periods_interval",
            ["account", "reporting_currency", "interval", "period_start"],
            unique=False,
        )
    with op.batch_alter_table("metrics_daily", schema=None) as batch_op:
        batch_op.create_index(
            "ix_metrics_daily_day", ["account", "reporting_currency", "day"], unique=False
        )


def downgrade() -> None:
    # The old readers would take the reduced rows for complete ones: recompute instead.
    _empty_derived_tables()
    with op.batch_alter_table("metrics_daily", schema=None) as batch_op:
        batch_op.drop_index("ix_metrics_daily_day")
    with op.batch_alter_table("metrics_periods", schema=None) as batch_op:
        batch_op.drop_index("ix_metrics_periods_interval")
        for name in (*AMOUNTS, *COUNTS, "customer_days"):
            batch_op.drop_column(name)
