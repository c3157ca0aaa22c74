"""event store

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "stripe_events",
        sa.Column("id", BigIntPK, primary_key=True, autoincrement=True),
        sa.Column("account", sa.String(255), nullable=False, server_default=""),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("api_version", sa.String(64), nullable=True),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("object_type", sa.String(64), nullable=True),
        sa.Column("object_id", sa.String(255), nullable=True),
        sa.Column("customer_id", sa.String(255), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_stripe_events"),
        sa.UniqueConstraint("account", "event_id", name="uq_stripe_events_account_event_id"),
    )
    op.create_index("ix_stripe_events_type", "stripe_events", ["type"])
    op.create_index(
        "ix_stripe_events_account_customer", "stripe_events", ["account", "customer_id"]
    )
    op.create_index("ix_stripe_events_account_object", "stripe_events", ["account", "object_id"])
    op.create_index(
        "ix_stripe_events_unhandled",
        "stripe_events",
        ["id"],
        postgresql_where=sa.text("handled_at IS NULL"),
        sqlite_where=sa.text("handled_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_table("stripe_events")
