"""projection queue: a partial index of the dead letters

Every read of a batch's events leaves the dead letters out (`NOT EXISTS (... d.id =
stripe_events.id AND d.dead_at IS NOT NULL)`). With no index that fits, PostgreSQL read
the whole queue for it, once per statement: at a backlog of 1M events (a rebuild, a
backfill, a burst) every batch of the drain and of `rebuild` scanned 1M rows. Dead
letters are few: an index of them alone answers in a probe, and costs nothing to the
queue's hot path (live rows have no entry).

Revision ID: 0018_projection_queue_dead_index
Revises: 0017_bi_views
Create Date: 2026-12-03 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018_projection_queue_dead_index"
down_revision = "0017_bi_views"
branch_labels = None
depends_on = None

DEAD = sa.text("dead_at IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_projection_queue_dead",
        "projection_queue",
        ["id"],
        postgresql_where=DEAD,
        sqlite_where=DEAD,
    )


def downgrade() -> None:
    op.drop_index("ix_projection_queue_dead", table_name="projection_queue")
