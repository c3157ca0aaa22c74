"""event store: the projection queue in a narrow table of its own

Projection bookkeeping (`handled_at`, `attempts`, `last_error`) lived on `stripe_events`,
whose rows carry 4-5 KB bodies: marking an event handled rewrote its row, and finding the
unhandled ones meant scanning. Now every stored event about a customer gets a row in
`projection_queue`, written by a trigger in the same statement as the event itself, so
that no writer (receiver, backfill, reconcile) can store an event and forget to queue it.
Projecting a customer deletes its queue rows in the transaction of its ledger write.
Events about no customer (products, prices) have nothing to project and are never queued.

Every type is queued, not only those a projector reads: the drain takes a customer once
for all its queued events, so the unread ones cost little, and the trigger need not
change whenever the catalogue of service/stripe_shapes/events.py does. `(account,
created)` serves "newest projected event" (`as_of`) by a backward index walk.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 02:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

_PG_FUNCTION = """
CREATE FUNCTION stripe_events_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO projection_queue (id, account, customer_id)
    SELECT id, account, customer_id FROM new_events
    WHERE customer_id IS NOT NULL;
    RETURN NULL;
END
$$
"""
# Statement-level with a transition table: one INSERT per multi-row insert of events,
# and only the rows actually inserted (ON CONFLICT DO NOTHING leaves duplicates out).
_PG_TRIGGER = """
CREATE TRIGGER stripe_events_enqueue AFTER INSERT ON stripe_events
REFERENCING NEW TABLE AS new_events
FOR EACH STATEMENT EXECUTE FUNCTION stripe_events_enqueue()
"""
_SQLITE_TRIGGER = """
CREATE TRIGGER stripe_events_enqueue AFTER INSERT ON stripe_events
WHEN NEW.customer_id IS NOT NULL
BEGIN
    INSERT INTO projection_queue (id, account, customer_id)
    VALUES (NEW.id, NEW.account, NEW.customer_id);
END
"""


def _create_trigger() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute(_PG_TRIGGER)
    else:
        op.execute(_SQLITE_TRIGGER)


def _drop_trigger() -> None:
    op.execute(
        "DROP TRIGGER IF EXISTS stripe_events_enqueue"
        + (" ON stripe_events" if op.get_bind().dialect.name == "postgresql" else "")
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS stripe_events_enqueue()")


def upgrade() -> None:
    op.create_table(
        "projection_queue",
        # The queued event's stripe_events.id: no sequence of its own, and no foreign
        # key (the event row is never deleted; the check would cost every insert).
        sa.Column("id", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("account", sa.String(255), nullable=False),
        sa.Column("customer_id", sa.String(255), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_projection_queue"),
    )
    op.create_index("ix_projection_queue_customer", "projection_queue", ["account", "customer_id"])
    op.execute(
        "INSERT INTO projection_queue (id, account, customer_id, attempts, last_error) "
        "SELECT id, account, customer_id, attempts, last_error FROM stripe_events "
        "WHERE handled_at IS NULL AND customer_id IS NOT NULL"
    )
    op.drop_index("ix_stripe_events_unhandled", table_name="stripe_events")
    with op.batch_alter_table("stripe_events") as batch:
        batch.drop_column("handled_at")
        batch.drop_column("attempts")
        batch.drop_column("last_error")
    op.create_index("ix_stripe_events_account_created", "stripe_events", ["account", "created"])
    # After the batch: on SQLite it recreates the table, which would drop a trigger.
    _create_trigger()


def downgrade() -> None:
    _drop_trigger()
    op.drop_index("ix_stripe_events_account_created", table_name="stripe_events")
    with op.batch_alter_table("stripe_events") as batch:
        batch.add_column(sa.Column("handled_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
    # Whatever is not queued was projected (or needs no projection).
    op.execute(
        "UPDATE stripe_events SET handled_at = CURRENT_TIMESTAMP "
        "WHERE id NOT IN (SELECT id FROM projection_queue)"
    )
    op.execute(
        "UPDATE stripe_events SET attempts = (SELECT q.attempts FROM projection_queue q "
        "WHERE q.id = stripe_events.id), last_error = (SELECT q.last_error FROM "
        "projection_queue q WHERE q.id = stripe_events.id) "
        "WHERE id IN (SELECT id FROM projection_queue)"
    )
    op.create_index(
        "ix_stripe_events_unhandled",
        "stripe_events",
        ["id"],
        postgresql_where=sa.text("handled_at IS NULL"),
        sqlite_where=sa.text("handled_at IS NULL"),
    )
    op.drop_index("ix_projection_queue_customer", table_name="projection_queue")
    op.drop_table("projection_queue")
