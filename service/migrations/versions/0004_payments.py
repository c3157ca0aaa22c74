"""payments: failed-payment episodes, the alert outbox, MRR-at-risk alert state

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-23 09:29:26.511980
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payment_alerts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("dedup_key", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "delivered",
                "failed",
                "expired",
                name="alertstatus",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_ms", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_alerts")),
    )
    with op.batch_alter_table("payment_alerts", schema=None) as batch_op:
        batch_op.create_index("ix_payment_alerts_due", ["status", "next_attempt_ms"], unique=False)
        batch_op.create_index("uq_payment_alerts_key", ["account", "dedup_key"], unique=True)

    op.create_table(
        "payment_episodes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("invoice_id", sa.String(length=255), nullable=False),
        sa.Column("customer_id", sa.String(length=255), nullable=False),
        sa.Column("subscription_id", sa.String(length=255), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("amount_due", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("first_failure_at", sa.BigInteger(), nullable=False),
        sa.Column("last_failure_at", sa.BigInteger(), nullable=False),
        sa.Column("next_retry_at", sa.BigInteger(), nullable=True),
        sa.Column("decline_code", sa.String(length=64), nullable=True),
        sa.Column("failure_message", sa.Text(), nullable=True),
        sa.Column("billing_reason", sa.String(length=64), nullable=True),
        sa.Column("action_required", sa.Boolean(), nullable=False),
        sa.Column(
            "outcome",
            sa.Enum("open", "recovered", "lost", name="outcome", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column(
            "lost_reason",
            sa.Enum(
                "voided",
                "uncollectible",
                "subscription_canceled",
                name="lostreason",
                native_enum=False,
                length=24,
            ),
            nullable=True,
        ),
        sa.Column("closed_at", sa.BigInteger(), nullable=True),
        sa.Column("recovered_at", sa.BigInteger(), nullable=True),
        sa.Column("time_to_recover_s", sa.BigInteger(), nullable=True),
        sa.Column("recovered_on_attempt", sa.Integer(), nullable=True),
        sa.Column("event_ids", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payment_episodes")),
    )
    with op.batch_alter_table("payment_episodes", schema=None) as batch_op:
        batch_op.create_index(
            "ix_payment_episodes_customer", ["account", "customer_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_payment_episodes_outcome"), ["outcome"], unique=False)
        batch_op.create_index(
            "ix_payment_episodes_started",
            ["account", "first_failure_at", "invoice_id"],
            unique=False,
        )
        batch_op.create_index("uq_payment_episodes_invoice", ["account", "invoice_id"], unique=True)

    op.create_table(
        "payment_risk_states",
        sa.Column("account", sa.String(length=255), nullable=False),
        sa.Column("above", sa.Boolean(), nullable=False),
        sa.Column("mrr_at_risk", sa.BigInteger(), nullable=False),
        sa.Column("crossings", sa.Integer(), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("account", name=op.f("pk_payment_risk_states")),
    )


def downgrade() -> None:
    op.drop_table("payment_risk_states")
    with op.batch_alter_table("payment_episodes", schema=None) as batch_op:
        batch_op.drop_index("uq_payment_episodes_invoice")
        batch_op.drop_index("ix_payment_episodes_started")
        batch_op.drop_index(batch_op.f("ix_payment_episodes_outcome"))
        batch_op.drop_index("ix_payment_episodes_customer")

    op.drop_table("payment_episodes")
    with op.batch_alter_table("payment_alerts", schema=None) as batch_op:
        batch_op.drop_index("uq_payment_alerts_key")
        batch_op.drop_index("ix_payment_alerts_due")

    op.drop_table("payment_alerts")
