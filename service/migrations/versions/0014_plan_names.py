"""subscription_states.plan_name: the product name and price nickname beside the price id

`segment_by=plan` answers the id as `segment` and this as `segment_label`. Existing rows
get it when their customer is projected again (`churn-ledger rebuild` for all at once);
until then their label is the id.

Revision ID: 0014_plan_names
Revises: 0013_refresh_duration
Create Date: 2026-12-02 19:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_plan_names"
down_revision = "0013_refresh_duration"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("subscription_states", sa.Column("plan_name", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subscription_states", schema=None) as batch_op:
        batch_op.drop_column("plan_name")
