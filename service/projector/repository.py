"""All SQL of projection's writes: the per-customer lock, the schedule of due changes,
and the ledger and payment rows, one customer at a time or many in bulk."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.kit.sql import IN_CHUNK, chunks, insert_for
from service.ledger.models import (
    DataQualityWarning,
    LedgerCustomer,
    MrrMovement,
    SubscriptionMrrChange,
    SubscriptionState,
)
from service.payments.models import PaymentAlert, PaymentEpisode

DERIVED = (MrrMovement, SubscriptionMrrChange, SubscriptionState, DataQualityWarning)
MOVEMENT_FIELDS = (
    "movement", "from_mrr", "to_mrr", "delta", "reporting_currency", "fx_rate",
    "from_mrr_reporting", "to_mrr_reporting", "delta_reporting", "event_ids",
    "subscription_ids", "churn_reason", "churn_feedback", "churn_comment",
)  # fmt: skip
EPISODE_FIELDS = (
    "customer_id", "subscription_id", "currency", "amount_due", "attempts",
    "first_failure_at", "last_failure_at", "next_retry_at", "decline_code", "failure_message",
    "billing_reason", "action_required", "outcome", "lost_reason", "closed_at",
    "recovered_at", "time_to_recover_s", "recovered_on_attempt", "event_ids",
)  # fmt: skip


class ProjectionRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- the per-customer lock and the schedule -------------------------------------

    def lock_customer(self, account: str, customer_id: str) -> LedgerCustomer:
        """Serialize projection of one customer across receivers and workers.

        The INSERT comes first on purpose: on SQLite it takes the database write lock
        before anything is read; on PostgreSQL the row then exists for FOR UPDATE.
        """
        self.session.execute(
            insert_for(self.session, LedgerCustomer)
            .values(account=account, customer_id=customer_id)
            .on_conflict_do_nothing(index_elements=["account", "customer_id"])
        )
        return self.session.scalars(
            select(LedgerCustomer)
            .where(LedgerCustomer.account == account, LedgerCustomer.customer_id == customer_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()

    def due_customers(self, now: int, limit: int) -> list[tuple[str, str]]:
        rows = self.session.execute(
            select(LedgerCustomer.account, LedgerCustomer.customer_id)
            .where(LedgerCustomer.next_change_at <= now)
            .order_by(LedgerCustomer.account, LedgerCustomer.customer_id)
            .limit(limit)
        ).all()
        return [(a, c) for a, c in rows]

    # --- bulk rebuild: many customers of one account per statement ---------------------

    @property
    def holds_write_lock(self) -> bool:
        """After any write in a transaction, whether no other connection can write until it
        ends (SQLite's single writer), so reads and writes see the same events."""
        return self.session.get_bind().dialect.name == "sqlite"

    def lock_customers(self, account: str, customer_ids: Sequence[str]) -> None:
        """`lock_customer` for many: rows inserted if missing, then all row-locked."""
        self.session.execute(
            insert_for(self.session, LedgerCustomer).on_conflict_do_nothing(
                index_elements=["account", "customer_id"]
            ),
            [{"account": account, "customer_id": c} for c in customer_ids],
        )
        if self.session.get_bind().dialect.name != "postgresql":
            return  # SQLite: the INSERT took the database write lock until commit
        table = LedgerCustomer.__table__
        for chunk in chunks(customer_ids, IN_CHUNK):
            self.session.execute(
                select(table.c.customer_id)
                .where(table.c.account == account, table.c.customer_id.in_(chunk))
                .with_for_update()
            ).all()

    def delete_customers_rows(self, account: str, customer_ids: Sequence[str]) -> set[date]:
        """Delete these customers' derived rows; returns the days of their old ledger rows."""
        days: set[date] = set()
        for chunk in chunks(customer_ids, IN_CHUNK):
            for model in (*DERIVED, PaymentEpisode):
                table = model.__table__
                stmt = table.delete().where(
                    table.c.account == account, table.c.customer_id.in_(chunk)
                )
                if model is MrrMovement:
                    days.update(self.session.scalars(stmt.returning(table.c.day)))
                else:
                    self.session.execute(stmt)
        return days

    def insert_bulk(self, rows: Any) -> None:
        """Write a `BulkRows`: plain inserts (the rows were just deleted), the customer
        rows over their lock placeholders, alerts not already in the outbox."""
        for model, values in (
            (SubscriptionState, rows.states),
            (SubscriptionMrrChange, rows.changes),
            (DataQualityWarning, rows.warnings),
            (MrrMovement, rows.movements),
            (PaymentEpisode, rows.episodes),
        ):
            if values:
                self._insert_rows(model.__table__, values)
        if rows.customers:
            self._upsert_customers(rows.customers)
        if rows.alerts:
            self.session.execute(
                insert_for(self.session, PaymentAlert).on_conflict_do_nothing(
                    index_elements=["account", "dedup_key"]
                ),
                rows.alerts,
            )

    def _driver_rows(self, table: Any, rows: list[dict[str, Any]]) -> tuple[list[str], list]:
        """Column names and value tuples as SQLAlchemy would send them (its own bind
        processors: JSON text, enum names, SQLite date strings), without its per-row
        statement machinery, which costs more than the insert itself."""
        dialect = self.session.get_bind().dialect
        names = list(rows[0])
        processors = [table.c[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names]
        pairs = list(zip(names, processors, strict=True))
        return names, [tuple(row[n] if p is None else p(row[n]) for n, p in pairs) for row in rows]

    def _insert_rows(self, table: Any, rows: list[dict[str, Any]]) -> None:
        names, values = self._driver_rows(table, rows)
        raw = self.session.connection().connection.driver_connection
        columns = ", ".join(f'"{n}"' for n in names)
        if self.session.get_bind().dialect.name == "postgresql":
            # COPY: several times faster than (pipelined) INSERTs for thousands of rows.
            with (
                raw.cursor() as cursor,
                cursor.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy,
            ):
                for value in values:
                    copy.write_row(value)
            return
        marks = ", ".join("?" for _ in names)
        raw.executemany(f"INSERT INTO {table.name} ({columns}) VALUES ({marks})", values)

    def _upsert_customers(self, rows: list[dict[str, Any]]) -> None:
        """The customers' final rows over the placeholders `lock_customers` left."""
        table = LedgerCustomer.__table__
        names, values = self._driver_rows(table, rows)
        columns = ", ".join(names)
        updates = ", ".join(
            f"{n} = excluded.{n}" for n in names if n not in ("account", "customer_id")
        )
        upsert = (
            f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {{source}} "
            f"ON CONFLICT (account, customer_id) DO UPDATE SET {updates}"
        )
        raw = self.session.connection().connection.driver_connection
        if self.session.get_bind().dialect.name == "postgresql":
            with raw.cursor() as cursor:
                cursor.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS rebuild_customers "
                    f"(LIKE {table.name}) ON COMMIT DELETE ROWS"
                )
                with cursor.copy(f"COPY rebuild_customers ({columns}) FROM STDIN") as copy:
                    for value in values:
                        copy.write_row(value)
                cursor.execute(upsert.format(source="rebuild_customers"))
                cursor.execute("TRUNCATE rebuild_customers")
            return
        marks = ", ".join("?" for _ in names)
        # SQLite: `VALUES (...) ON CONFLICT` would parse ambiguously after a SELECT.
        raw.executemany(
            f"INSERT INTO {table.name} ({columns}) VALUES ({marks}) "
            f"ON CONFLICT (account, customer_id) DO UPDATE SET {updates}",
            values,
        )

    # --- writing one customer's projection ----------------------------------------------

    def replace_customer_rows(
        self,
        account: str,
        customer_id: str,
        states: list[dict[str, Any]],
        changes: list[dict[str, Any]],
        warnings: list[dict[str, Any]],
    ) -> None:
        for model in (SubscriptionMrrChange, SubscriptionState, DataQualityWarning):
            table = model.__table__
            self.session.execute(
                table.delete().where(table.c.account == account, table.c.customer_id == customer_id)
            )
        for model, rows in (
            (SubscriptionState, states),
            (SubscriptionMrrChange, changes),
            (DataQualityWarning, warnings),
        ):
            if rows:
                self.session.execute(model.__table__.insert(), rows)

    def sync_movements(
        self, account: str, customer_id: str, desired: list[dict[str, Any]]
    ) -> set[date]:
        """Make the customer's ledger rows equal `desired`, touching only what changed.

        Unchanged rows keep their ids, so cursors over /v1/movements stay valid.
        Returns the days whose rows changed (for the metrics jobs' dirty days).
        """
        existing = {
            (m.currency, m.day): m
            for m in self.session.scalars(
                select(MrrMovement).where(
                    MrrMovement.account == account, MrrMovement.customer_id == customer_id
                )
            )
        }
        touched: set[date] = set()
        inserts = []
        for row in desired:
            current = existing.pop((row["currency"], row["day"]), None)
            if current is None:
                inserts.append({"account": account, "customer_id": customer_id, **row})
                touched.add(row["day"])
            elif any(getattr(current, f) != row[f] for f in MOVEMENT_FIELDS):
                for f in MOVEMENT_FIELDS:
                    setattr(current, f, row[f])
                touched.add(row["day"])
        for stale in existing.values():
            touched.add(stale.day)
            self.session.delete(stale)
        self.session.flush()
        if inserts:
            self.session.execute(MrrMovement.__table__.insert(), inserts)
        return touched

    def sync_episodes(self, account: str, customer_id: str, desired: list[dict[str, Any]]) -> None:
        """Make the customer's episodes equal `desired`, keeping ids of unchanged rows."""
        existing = {
            e.invoice_id: e
            for e in self.session.scalars(
                select(PaymentEpisode).where(
                    PaymentEpisode.account == account, PaymentEpisode.customer_id == customer_id
                )
            )
        }
        inserts = []
        for row in desired:
            current = existing.pop(row["invoice_id"], None)
            if current is None:
                inserts.append({"account": account, **row})
            else:
                for f in EPISODE_FIELDS:
                    if getattr(current, f) != row[f]:
                        setattr(current, f, row[f])
        for stale in existing.values():
            self.session.delete(stale)
        self.session.flush()
        if inserts:
            self.session.execute(PaymentEpisode.__table__.insert(), inserts)
