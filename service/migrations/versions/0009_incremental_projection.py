"""projection: what incremental projection goes on from, and indexes that fit its reads

Every projection recomputed the whole customer from all its stored events: a new event
of a customer with 5,000 cost ~0.8 s. Now a new subscription event is projected from the
subscription's stored state on (design §1): its latest snapshot, where a past-due run
began (`past_due_since`) and its next change with no event (`next_change_at`), and the
ledger is recomputed only from the new event's day on. For that the stored MRR changes
carry their churn (the ledger rows of a day that ends at 0 take it from them), and
`ledger_customers.incremental` says that the stored projection can be gone on from (set
by a full projection; rows from before this migration get one full projection first).

Indexes: a customer's events by type (`(account, customer_id, type)`, replacing
`(account, customer_id)`): its discounts and failed payments are read without walking its
whole history; a customer's MRR changes by instant (`(account, customer_id, at)`).

Revision ID: 0009
Revises: 0008_dead_letters
Create Date: 2026-12-02 10:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008_dead_letters"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "ledger_customers",
        sa.Column("incremental", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("subscription_states", sa.Column("past_due_since", sa.BigInteger()))
    op.add_column("subscription_states", sa.Column("next_change_at", sa.BigInteger()))
    op.add_column("subscription_mrr_changes", sa.Column("churn_reason", sa.String(16)))
    op.add_column("subscription_mrr_changes", sa.Column("churn_feedback", sa.String(64)))
    op.add_column("subscription_mrr_changes", sa.Column("churn_comment", sa.Text()))
    op.drop_index("ix_subscription_mrr_changes_customer", table_name="subscription_mrr_changes")
    op.create_index(
        "ix_subscription_mrr_changes_customer",
        "subscription_mrr_changes",
        ["account", "customer_id", "at"],
    )
    op.create_index(
        "ix_stripe_events_customer_type", "stripe_events", ["account", "customer_id", "type"]
    )
    op.drop_index("ix_stripe_events_account_customer", table_name="stripe_events")


def downgrade() -> None:
    op.create_index(
        "ix_stripe_events_account_customer", "stripe_events", ["account", "customer_id"]
    )
    op.drop_index("ix_stripe_events_customer_type", table_name="stripe_events")
    op.drop_index("ix_subscription_mrr_changes_customer", table_name="subscription_mrr_changes")
    op.create_index(
        "ix_subscription_mrr_changes_customer",
        "subscription_mrr_changes",
        ["account", "customer_id"],
    )
    # Plain DROP COLUMN (SQLite 3.35+), as in 0008: no batch copy of the tables.
    for table, column in (
        ("subscription_mrr_changes", "churn_comment"),
        ("subscription_mrr_changes", "churn_feedback"),
        ("subscription_mrr_changes", "churn_reason"),
        ("subscription_states", "next_change_at"),
        ("subscription_states", "past_due_since"),
        ("ledger_customers", "incremental"),
    ):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
