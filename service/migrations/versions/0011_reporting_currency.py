"""ledger: the reporting currency it was computed in; rows without an FX rate indexed

Changing REPORTING_CURRENCY on an existing database used to answer MRR 0 with
`stale: false`. The currency the ledger's reporting amounts are in is now stored
(`ledger_settings`, set from the existing rows here and by every full `churn-ledger
rebuild`), and /v1 answers 503 `reporting_currency_changed` naming the command while it
differs from the configured one. The partial index makes "which currencies have no rate"
a lookup, for every metrics answer.

Revision ID: 0011_reporting_currency
Revises: 0010_live_metrics
Create Date: 2026-12-02 10:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_reporting_currency"
down_revision = "0010_live_metrics"
branch_labels = None
depends_on = None

UNCONVERTED = sa.text("delta_reporting IS NULL")


def upgrade() -> None:
    op.create_table(
        "ledger_settings",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_ledger_settings"),
    )
    op.execute(
        "INSERT INTO ledger_settings (name, value) SELECT 'reporting_currency', "
        "(SELECT MIN(reporting_currency) FROM mrr_movements) "
        "WHERE EXISTS (SELECT 1 FROM mrr_movements)"
    )
    op.create_index(
        "ix_mrr_movements_unconverted",
        "mrr_movements",
        ["account", "reporting_currency", "currency", "day"],
        sqlite_where=UNCONVERTED,
        postgresql_where=UNCONVERTED,
    )


def downgrade() -> None:
    op.drop_index("ix_mrr_movements_unconverted", table_name="mrr_movements")
    op.drop_table("ledger_settings")
