"""metrics change feed: which customers changed, and since when

The live refresh (service/metrics/refresh.py) needs to know how far behind the metric
tables are (`marked_at`, unix milliseconds: `stale_seconds` in every answer) and which
customers a projection touched (`customer_id`, `day` NULL), so that it can recount only
those customers. A mark is either a day (FX recomputation, older projectors) or a
customer.

Revision ID: 0010_live_metrics
Revises: 0009
Create Date: 2026-12-02 10:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_live_metrics"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("metrics_dirty_days", schema=None) as batch_op:
        batch_op.add_column(sa.Column("customer_id", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("marked_at", sa.BigInteger(), nullable=True))
        batch_op.alter_column("day", existing_type=sa.Date(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM metrics_dirty_days WHERE day IS NULL")
    with op.batch_alter_table("metrics_dirty_days", schema=None) as batch_op:
        batch_op.alter_column("day", existing_type=sa.Date(), nullable=False)
        batch_op.drop_column("marked_at")
        batch_op.drop_column("customer_id")
