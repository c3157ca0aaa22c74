"""event store: no index on `type` alone

Every read of events by type is of one customer's (its discounts, its failed payments,
the drain's batch): `(account, customer_id, type)` (0009) serves them. The index on
`type` alone served none, cost every stored event an index entry, and lured the planner:
with fresh statistics PostgreSQL read a customer's discount events through it, i.e. the
discount events of the whole store.

Revision ID: 0012_events_type_index
Revises: 0011_reporting_currency
Create Date: 2026-12-02 11:30:00.000000
"""

from __future__ import annotations

from alembic import op

revision = "0012_events_type_index"
down_revision = "0011_reporting_currency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_stripe_events_type", table_name="stripe_events")


def downgrade() -> None:
    op.create_index("ix_stripe_events_type", "stripe_events", ["type"])
