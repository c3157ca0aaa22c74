"""All SQL of the event store."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import Session

from service.kit.sql import dialect_name, insert_for
from service.webhooks.models import StripeEvent

_INSERT_MANY_IF_NEW: dict[str, Any] = {}


class StripeEventRepository:
    def __init__(self, session: Session | Connection) -> None:
        # A Connection too: the receiver's writer keeps one per thread (no pool
        # checkout, and on PostgreSQL no BEGIN/COMMIT round trips, per batch).
        self.session = session

    def insert_if_new(self, values: dict[str, Any]) -> int | None:
        """Insert unless (account, event_id) exists; the new row id, or None if it did.

        ON CONFLICT DO NOTHING rather than check-then-insert: two receivers handed the
        same event at once must store it once without either failing.
        """
        return self.insert_many_if_new([values])[0]

    def insert_many_if_new(self, rows: list[dict[str, Any]]) -> list[int | None]:
        """`insert_if_new` for a batch, in one statement: the new row id of each row, or
        None where (account, event_id) existed already, or earlier in the same batch."""
        dialect = dialect_name(self.session)
        stmt = _INSERT_MANY_IF_NEW.get(dialect)
        if stmt is None:
            # Built once per dialect, with parameters bound at execution: the receiver's
            # hot path then skips statement construction and cache-key work.
            table = StripeEvent.__table__
            stmt = (
                insert_for(self.session, table)
                .on_conflict_do_nothing(index_elements=["account", "event_id"])
                .returning(table.c.id, table.c.account, table.c.event_id)
            )
            _INSERT_MANY_IF_NEW[dialect] = stmt
        first: dict[tuple[str, str], int] = {}
        for i, row in enumerate(rows):
            first.setdefault((row["account"], row["event_id"]), i)
        # In key order: two writers inserting overlapping batches then wait on each
        # other's unique-index entries in the same order, never in a deadlock.
        unique = [rows[first[key]] for key in sorted(first)]
        # RETURNING leaves out the conflicting rows, and its order is not the input's:
        # rows are matched back by their key.
        inserted = {
            (account, event_id): row_id
            for row_id, account, event_id in self.session.execute(stmt, unique)
        }
        return [
            inserted.get(key) if first[key] == i else None
            for i, key in enumerate((row["account"], row["event_id"]) for row in rows)
        ]

    def get(self, account: str, event_id: str) -> StripeEvent | None:
        return self.session.scalars(
            select(StripeEvent).where(
                StripeEvent.account == account, StripeEvent.event_id == event_id
            )
        ).one_or_none()

    def count(self) -> int:
        return self.session.scalar(select(func.count()).select_from(StripeEvent)) or 0

    def count_unhandled(self) -> int:
        return (
            self.session.scalar(
                select(func.count())
                .select_from(StripeEvent)
                .where(StripeEvent.handled_at.is_(None))
            )
            or 0
        )
