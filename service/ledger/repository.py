"""All SQL of the ledger: per-customer lock, event loading, and writing projections."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from psycopg.rows import namedtuple_row
from sqlalchemy import Row, and_, func, or_, select, update
from sqlalchemy.orm import Session

from service.kit.sql import chunks as _chunks
from service.kit.sql import insert_for
from service.ledger.fx import FxQuote, FxTable
from service.ledger.models import (
    DataQualityWarning,
    FxRate,
    LedgerCustomer,
    MrrMovement,
    SubscriptionMrrChange,
    SubscriptionState,
)
from service.payments.models import PaymentAlert, PaymentEpisode
from service.webhooks.models import StripeEvent

DERIVED = (MrrMovement, SubscriptionMrrChange, SubscriptionState, DataQualityWarning)
MOVEMENT_FIELDS = (
    "movement", "from_mrr", "to_mrr", "delta", "reporting_currency", "fx_rate",
    "from_mrr_reporting", "to_mrr_reporting", "delta_reporting", "event_ids",
    "subscription_ids", "churn_reason", "churn_feedback", "churn_comment",
)  # fmt: skip


IN_CHUNK = 1000  # customer ids per IN list: far below SQLite's and psycopg's limits
STREAM_ROWS = 2000  # event rows per fetch while streaming a batch's events


_PG_EVENTS_OF_RANGE = """
SELECT customer_id, event_id, type, created, body FROM stripe_events
WHERE account = %(account)s AND customer_id >= %(first)s AND customer_id <= %(last)s
  AND (type = ANY(%(types)s::text[])
       OR (type = ANY(%(flagged_types)s::text[]) AND customer_id = ANY(%(flagged)s::text[])))
ORDER BY customer_id
"""


class LedgerRepository:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._cursors = 0

    # --- the per-customer lock ------------------------------------------------------

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

    # --- events -----------------------------------------------------------------------

    def customer_events(self, account: str, customer_id: str) -> Sequence[Row[Any]]:
        return self.session.execute(
            select(
                StripeEvent.id,
                StripeEvent.event_id,
                StripeEvent.type,
                StripeEvent.created,
                StripeEvent.body,
            ).where(StripeEvent.account == account, StripeEvent.customer_id == customer_id)
        ).all()

    def mark_handled(self, row_ids: Sequence[int], at: datetime) -> None:
        events = StripeEvent.__table__
        # Core, not ORM, statements on the projector's path: no identity-map
        # synchronization to pay for on every customer.
        for chunk in _chunks(row_ids):
            self.session.execute(
                events.update()
                .where(events.c.id.in_(chunk), events.c.handled_at.is_(None))
                .values(handled_at=at, last_error=None)
            )

    def mark_customerless_handled(self, at: datetime) -> int:
        """Events about no customer (products, prices, ...) have nothing to project."""
        result = self.session.execute(
            update(StripeEvent)
            .where(StripeEvent.handled_at.is_(None), StripeEvent.customer_id.is_(None))
            .values(handled_at=at)
        )
        return result.rowcount or 0

    def pending_customers(self, limit: int, max_attempts: int) -> list[tuple[str, str]]:
        rows = self.session.execute(
            select(StripeEvent.account, StripeEvent.customer_id)
            .where(
                StripeEvent.handled_at.is_(None),
                StripeEvent.customer_id.is_not(None),
                StripeEvent.attempts < max_attempts,
            )
            .distinct()
            .order_by(StripeEvent.account, StripeEvent.customer_id)
            .limit(limit)
        ).all()
        return [(a, c) for a, c in rows]

    def due_customers(self, now: int, limit: int) -> list[tuple[str, str]]:
        rows = self.session.execute(
            select(LedgerCustomer.account, LedgerCustomer.customer_id)
            .where(LedgerCustomer.next_change_at <= now)
            .order_by(LedgerCustomer.account, LedgerCustomer.customer_id)
            .limit(limit)
        ).all()
        return [(a, c) for a, c in rows]

    def all_customers(self, account: str | None) -> list[tuple[str, str]]:
        query = select(StripeEvent.account, StripeEvent.customer_id).where(
            StripeEvent.customer_id.is_not(None)
        )
        if account is not None:
            query = query.where(StripeEvent.account == account)
        rows = self.session.execute(
            query.distinct().order_by(StripeEvent.account, StripeEvent.customer_id)
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
        for chunk in _chunks(customer_ids, IN_CHUNK):
            self.session.execute(
                select(table.c.customer_id)
                .where(table.c.account == account, table.c.customer_id.in_(chunk))
                .with_for_update()
            ).all()

    def mark_customers_handled(
        self, account: str, customer_ids: Sequence[str], at: datetime
    ) -> None:
        """Handled, attempts and error reset, for every event of these customers; rows
        already in that state are left alone (no rewrite of the whole event store)."""
        events = StripeEvent.__table__
        for chunk in _chunks(customer_ids, IN_CHUNK):
            self.session.execute(
                events.update()
                .where(
                    events.c.account == account,
                    events.c.customer_id.in_(chunk),
                    or_(
                        events.c.handled_at.is_(None),
                        events.c.attempts != 0,
                        events.c.last_error.is_not(None),
                    ),
                )
                .values(handled_at=at, attempts=0, last_error=None)
            )

    def events_of_range(
        self,
        account: str,
        first: str,
        last: str,
        *,
        types: Iterable[str],
        flagged_types: Iterable[str],
        flag_type: str,
        flag_until: int,
    ) -> Iterator[Any]:
        """Events (customer_id, event_id, type, created, body) of the customers in
        [first, last] of one account, grouped by customer: those of `types`, and those of
        `flagged_types` only for a customer with an event of `flag_type` created up to
        `flag_until` (the others are not even sent). Streamed: a server-side cursor, with
        binary results on PostgreSQL (bodies as bytes, not hex text)."""
        events = StripeEvent.__table__
        in_range = (
            events.c.account == account,
            events.c.customer_id >= first,
            events.c.customer_id <= last,
        )
        flagged = list(
            self.session.scalars(
                select(events.c.customer_id)
                .where(*in_range, events.c.type == flag_type, events.c.created <= flag_until)
                .distinct()
            )
        )
        if self.session.get_bind().dialect.name == "postgresql":
            return self._pg_stream(
                _PG_EVENTS_OF_RANGE,
                {
                    "account": account,
                    "first": first,
                    "last": last,
                    "types": sorted(types),
                    "flagged_types": sorted(flagged_types),
                    "flagged": flagged,
                },
            )
        stmt = (
            select(
                events.c.customer_id,
                events.c.event_id,
                events.c.type,
                events.c.created,
                events.c.body,
            )
            .where(
                *in_range,
                or_(
                    events.c.type.in_(sorted(types)),
                    and_(
                        events.c.type.in_(sorted(flagged_types)),
                        events.c.customer_id.in_(flagged),
                    ),
                ),
            )
            .order_by(events.c.customer_id)
            .execution_options(yield_per=STREAM_ROWS)
        )
        return iter(self.session.execute(stmt))

    def _pg_stream(self, sql: str, params: dict[str, Any]) -> Iterator[Any]:
        # The session's own connection and transaction (the rows locked and marked above).
        raw = self.session.connection().connection.driver_connection
        self._cursors += 1
        with raw.cursor(
            name=f"rebuild_events_{self._cursors}", binary=True, row_factory=namedtuple_row
        ) as cursor:
            cursor.itersize = STREAM_ROWS
            cursor.execute(sql, params)
            yield from cursor

    def delete_customers_rows(self, account: str, customer_ids: Sequence[str]) -> set[date]:
        """Delete these customers' derived rows; returns the days of their old ledger rows."""
        days: set[date] = set()
        for chunk in _chunks(customer_ids, IN_CHUNK):
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

    def record_failure(self, account: str, customer_id: str, error: str) -> None:
        self.session.execute(
            update(StripeEvent)
            .where(
                StripeEvent.account == account,
                StripeEvent.customer_id == customer_id,
                StripeEvent.handled_at.is_(None),
            )
            .values(attempts=StripeEvent.attempts + 1, last_error=error[:2000])
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

    # --- reads ------------------------------------------------------------------------

    def movements(self, account: str, customer_id: str) -> Sequence[MrrMovement]:
        return self.session.scalars(
            select(MrrMovement)
            .where(MrrMovement.account == account, MrrMovement.customer_id == customer_id)
            .order_by(MrrMovement.day, MrrMovement.currency)
        ).all()

    def customer(self, account: str, customer_id: str) -> LedgerCustomer | None:
        return self.session.get(LedgerCustomer, (account, customer_id))

    def subscriptions_of(self, account: str, customer_id: str) -> Sequence[SubscriptionState]:
        return self.session.scalars(
            select(SubscriptionState)
            .where(
                SubscriptionState.account == account, SubscriptionState.customer_id == customer_id
            )
            .order_by(SubscriptionState.subscription_id)
        ).all()

    def subscription(self, account: str, subscription_id: str) -> SubscriptionState | None:
        return self.session.get(SubscriptionState, (account, subscription_id))

    def subscription_changes(
        self, account: str, subscription_id: str
    ) -> Sequence[SubscriptionMrrChange]:
        return self.session.scalars(
            select(SubscriptionMrrChange)
            .where(
                SubscriptionMrrChange.account == account,
                SubscriptionMrrChange.subscription_id == subscription_id,
            )
            .order_by(SubscriptionMrrChange.at, SubscriptionMrrChange.id)
        ).all()

    def subscription_event_ids(self, account: str, subscription_id: str) -> list[str]:
        return list(
            self.session.scalars(
                select(StripeEvent.event_id)
                .where(StripeEvent.account == account, StripeEvent.object_id == subscription_id)
                .order_by(StripeEvent.created, StripeEvent.event_id)
            )
        )

    def warnings(self, account: str, customer_id: str) -> Sequence[DataQualityWarning]:
        return self.session.scalars(
            select(DataQualityWarning)
            .where(
                DataQualityWarning.account == account,
                DataQualityWarning.customer_id == customer_id,
            )
            .order_by(DataQualityWarning.id)
        ).all()

    def count_movements(self) -> int:
        return self.session.scalar(select(func.count()).select_from(MrrMovement)) or 0

    # --- FX -----------------------------------------------------------------------------

    def fx_table(self, reporting: str) -> FxTable:
        rows = self.session.scalars(select(FxRate).where(FxRate.quote == reporting.lower()))
        return FxTable(reporting, (FxQuote(r.currency, r.day, Decimal(r.rate)) for r in rows))

    def fx_rows(self, reporting: str) -> Sequence[FxRate]:
        return self.session.scalars(
            select(FxRate)
            .where(FxRate.quote == reporting.lower())
            .order_by(FxRate.currency, FxRate.day)
        ).all()

    def upsert_fx_rates(self, reporting: str, quotes: Sequence[FxQuote]) -> None:
        quote = reporting.lower()
        for q in quotes:
            stmt = insert_for(self.session, FxRate).values(
                quote=quote, currency=q.currency, day=q.day, rate=str(q.rate)
            )
            self.session.execute(
                stmt.on_conflict_do_update(
                    index_elements=["quote", "currency", "day"], set_={"rate": str(q.rate)}
                )
            )

    def movements_in_currencies(
        self, reporting: str, currencies: Iterable[str], since: date
    ) -> Sequence[MrrMovement]:
        return self.session.scalars(
            select(MrrMovement).where(
                MrrMovement.currency.in_(list(currencies)),
                MrrMovement.reporting_currency == reporting.lower(),
                MrrMovement.day >= since,
            )
        ).all()
