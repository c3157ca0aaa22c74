"""projection queue: dead letters

An event whose projection keeps failing (after PROJECTOR_MAX_ATTEMPTS) was left on the
queue with its attempts spent, and every later event of its customer failed with it: the
customer stayed missing. Now the failing event itself is found and set aside (`dead_at`,
the reason in `last_error`); the projector leaves it out and projects the customer from
its other events. `churn-ledger dead-letters replay` puts it back on the queue.

Revision ID: 0008_dead_letters
Revises: 0007
Create Date: 2026-12-02 06:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_dead_letters"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("projection_queue", sa.Column("dead_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    # A dead letter becomes a plain queued event again, with its attempts spent. A plain
    # DROP COLUMN (SQLite 3.35+): a batch copy of the table would break the trigger of
    # stripe_events that inserts into it.
    op.execute("ALTER TABLE projection_queue DROP COLUMN dead_at")
