"""metrics_refreshes.duration_ms: how long the last refresh of an account took

The gauge `churn_ledger_metrics_refresh_duration_seconds` is read from here, so that any
process (the refresh runs in the projector's) reports it.

Revision ID: 0013_refresh_duration
Revises: 0012_events_type_index
Create Date: 2026-12-02 11:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_refresh_duration"
down_revision = "0012_events_type_index"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("metrics_refreshes", sa.Column("duration_ms", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("metrics_refreshes", schema=None) as batch_op:
        batch_op.drop_column("duration_ms")
