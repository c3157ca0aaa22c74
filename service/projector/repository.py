"""All SQL of projection's writes: the per-customer lock, the schedule of due changes,
and the ledger and payment rows of a batch of customers, in bulk."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import and_, bindparam, or_, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.kit.sql import among, in_values, insert_for
from service.ledger.models import (
    DataQualityWarning,
    LedgerCustomer,
    MrrMovement,
    SubscriptionMrrChange,
    SubscriptionState,
)
from service.payments.models import PaymentAlert, PaymentEpisode
from service.webhooks.models import QueuedEvent, StripeEvent

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


SMALL = 32  # rows up to which a bulk write is one INSERT statement on PostgreSQL


class ProjectionRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- the per-customer lock and the schedule -------------------------------------

    def due_customers(self, now: int, limit: int) -> list[tuple[str, str]]:
        """Customers with a scheduled change due at `now`, the longest due first.

        Ordered by the due time, the (next_change_at) index is read from its start up to
        `now`: ordered by the primary key, SQLite walked every customer (every drain
        pass, the whole ledger_customers table) to find the few that are due."""
        t = LedgerCustomer.__table__.c
        rows = self.session.execute(
            select(t.account, t.customer_id)
            .where(t.next_change_at <= now)
            .order_by(t.next_change_at, t.account, t.customer_id)
            .limit(limit)
        ).all()
        return [(a, c) for a, c in rows]

    # --- what incremental projection goes on from (one customer) ---------------------

    def incremental_customers(
        self, account: str, customer_ids: Sequence[str], now: int
    ) -> dict[str, tuple[date | None, int | None]]:
        """(first_mrr_day, next_change_at) of those of these customers whose stored
        projection incremental projection can go on from at `now`: one that says so, and
        with no change due (a due one is recomputed whole)."""
        table = LedgerCustomer.__table__
        found: dict[str, tuple[date | None, int | None]] = {}
        for customers in among(self.session, table.c.customer_id, customer_ids):
            for row in self.session.execute(
                select(table.c.customer_id, table.c.first_mrr_day, table.c.next_change_at).where(
                    table.c.account == account,
                    customers,
                    table.c.incremental.is_(True),
                    or_(table.c.next_change_at.is_(None), table.c.next_change_at > now),
                )
            ):
                found[row.customer_id] = (row.first_mrr_day, row.next_change_at)
        return found

    def with_history(
        self, account: str, customer_ids: Sequence[str], types: Sequence[str], at_least: int
    ) -> set[str]:
        """Those of these customers, known to the ledger, with at least `at_least` stored
        events of `types`. Each count stops at `at_least` (an OFFSET in EXISTS): counting
        a 5,000-event customer's index entries whole was ~3 ms of each new event's 18."""
        t, e = LedgerCustomer.__table__.c, StripeEvent.__table__.c
        nth = (
            select(e.id)
            .where(e.account == t.account, e.customer_id == t.customer_id, e.type.in_(types))
            .limit(1)
            .offset(at_least - 1)
        )
        found: set[str] = set()
        for customers in among(self.session, t.customer_id, customer_ids):
            found.update(
                self.session.scalars(
                    select(t.customer_id).where(t.account == account, customers, nth.exists())
                )
            )
        return found

    def states_of(self, account: str, customer_id: str) -> list[Any]:
        """The customer's subscription states, each with its latest snapshot's event
        (type, created, body; None if that event is gone), in one query."""
        t, e = SubscriptionState.__table__.c, StripeEvent.__table__.c
        return list(
            self.session.execute(
                select(
                    t.subscription_id, t.last_event_id, t.past_due_since, t.next_change_at,
                    e.type, e.created, e.body,
                )
                .outerjoin_from(
                    SubscriptionState.__table__,
                    StripeEvent.__table__,
                    and_(e.account == t.account, e.event_id == t.last_event_id),
                )
                .where(t.account == account, t.customer_id == customer_id)
            ).all()
        )  # fmt: skip

    def _change_columns(self) -> list[Any]:
        t = SubscriptionMrrChange.__table__.c
        return [
            t.id, t.subscription_id, t.at, t.mrr, t.currency, t.status, t.cause, t.event_id,
            t.churn_reason, t.churn_feedback, t.churn_comment,
        ]  # fmt: skip

    def changes_from(self, account: str, customer_id: str, at: int) -> list[Any]:
        """The customer's MRR changes from instant `at` on, in the order they were made
        per subscription and instant."""
        t = SubscriptionMrrChange.__table__.c
        return list(
            self.session.execute(
                select(*self._change_columns())
                .where(t.account == account, t.customer_id == customer_id, t.at >= at)
                .order_by(t.at, t.subscription_id, t.id)
            ).all()
        )

    def last_change_before(
        self, account: str, customer_id: str, subscription_id: str, at: int
    ) -> Any | None:
        t = SubscriptionMrrChange.__table__.c
        return self.session.execute(
            select(*self._change_columns())
            .where(
                t.account == account,
                t.subscription_id == subscription_id,
                t.customer_id == customer_id,
                t.at < at,
            )
            .order_by(t.at.desc(), t.id.desc())
            .limit(1)
        ).one_or_none()

    def total_before(self, account: str, customer_id: str, currency: str, day: date) -> int:
        """The customer's MRR in `currency` at the start of `day`: where its last ledger
        row before that day left it."""
        t = MrrMovement.__table__.c
        return (
            self.session.scalar(
                select(t.to_mrr)
                .where(
                    t.account == account,
                    t.customer_id == customer_id,
                    t.currency == currency,
                    t.day < day,
                )
                .order_by(t.day.desc())
                .limit(1)
            )
            or 0
        )

    def write_incremental(self, account: str, customer_id: str, delta: Any) -> set[date]:
        """Apply one customer's `CustomerDelta`; returns the days whose ledger rows
        changed."""
        changes = SubscriptionMrrChange.__table__
        for ids in among(self.session, changes.c.id, delta.drop_changes):
            self.session.execute(changes.delete().where(ids))
        if delta.changes:
            self._insert_rows(changes, delta.changes)
        if delta.states:
            states = SubscriptionState.__table__
            self.session.execute(
                states.delete().where(
                    states.c.account == account,
                    in_values(
                        self.session,
                        states.c.subscription_id,
                        [r["subscription_id"] for r in delta.states],
                    ),
                )
            )
            self._insert_rows(states, delta.states)
        if delta.warnings:
            self._insert_rows(DataQualityWarning.__table__, delta.warnings)
        changed: set[tuple[Any, ...]] = set()
        if delta.movements_since is not None:
            changed = self._sync(
                MrrMovement.__table__, account, [customer_id], delta.movements,
                ("customer_id", "currency", "day"), MOVEMENT_FIELDS, since=delta.movements_since,
            )  # fmt: skip
        self._upsert_customers([delta.customer])
        return {key[2] for key in changed}

    # --- many customers of one account per statement ----------------------------------

    def analyze_written(self) -> None:
        """PostgreSQL: fresh statistics of the tables a rebuild fills and of the queue it
        empties. Planned from an empty table's statistics, a batch's `customer_id IN
        (1,000 ids)` reads became a walk of the whole account through the index's
        `account` prefix (cheaper, by those statistics, than 1,000 probes): a 1M-event
        rebuild of one account ran at ~3,500 events/s (~17,000 at 100k). Autovacuum
        would analyze them too, but behind a rebuild's pace, and not at all where it is
        off. No-op on SQLite (its planner reads no statistics unless ANALYZE ran)."""
        if self.session.get_bind().dialect.name != "postgresql":
            return
        for model in (
            LedgerCustomer, SubscriptionState, SubscriptionMrrChange, DataQualityWarning,
            MrrMovement, PaymentEpisode, QueuedEvent,
        ):  # fmt: skip
            self.session.execute(text(f"ANALYZE {model.__tablename__}"))

    def analyze_stale(self, min_changes: int = 1000, fraction: float = 0.2) -> list[str]:
        """PostgreSQL: ANALYZE this schema's tables changed by at least `min_changes`
        rows and `fraction` of their rows since their statistics were taken; their names.

        Autovacuum does this (at 10% + 50 rows) but on its own clock, a minute apart by
        default, and not at all where it is off: a new database fills faster than that
        (a burst, a backfill), and planned from an empty table's statistics the drain's
        `customer_id IN (200 ids)` reads and deletes walked the whole account through the
        index's `account` prefix (its SQL time of a 20,000-event catch-up: 6.0 s, 2.2 s
        with statistics). A table another ANALYZE holds is left for the next time."""
        if self.session.get_bind().dialect.name != "postgresql":
            return []
        stale = self.session.scalars(
            # pg_class of this schema, not the pg_stat_user_tables view: that one joins
            # every table of every schema before it filters (~100 ms on a shared server).
            text(
                "SELECT relname FROM pg_class"
                " WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r'"
                " AND pg_stat_get_mod_since_analyze(oid) >= :least"
                " AND pg_stat_get_mod_since_analyze(oid)"
                "     >= :fraction * GREATEST(pg_stat_get_live_tuples(oid), 1)"
                " ORDER BY relname"
            ),
            {"least": min_changes, "fraction": fraction},
        ).all()
        done: list[str] = []
        for table in stale:
            try:
                with self.session.begin_nested():
                    self.session.execute(text("SET LOCAL lock_timeout = '200ms'"))
                    self.session.execute(text(f'ANALYZE "{table}"'))
                done.append(table)
            except OperationalError:
                continue
        return done

    def lock_customers(self, account: str, customer_ids: Sequence[str]) -> None:
        """`lock_customer` for many: rows inserted if missing, then all row-locked."""
        if self.session.get_bind().dialect.name != "postgresql":
            self.session.execute(
                insert_for(self.session, LedgerCustomer).on_conflict_do_nothing(
                    index_elements=["account", "customer_id"]
                ),
                [{"account": account, "customer_id": c} for c in customer_ids],
            )
            return  # SQLite: the INSERT took the database write lock until commit
        # One statement from one array: a rebuild batch's 2,000 rows through the ORM's
        # executemany were ~3% of a 1-worker rebuild. In the ids' order, as before.
        self.session.execute(
            text(
                "INSERT INTO ledger_customers (account, customer_id) "
                "SELECT :account, c FROM unnest(CAST(:ids AS varchar[])) WITH ORDINALITY "
                "AS u(c, n) ORDER BY n ON CONFLICT (account, customer_id) DO NOTHING"
            ),
            {"account": account, "ids": list(customer_ids)},
        )
        table = LedgerCustomer.__table__
        for customers in among(self.session, table.c.customer_id, customer_ids):
            self.session.execute(
                select(table.c.customer_id)
                .where(table.c.account == account, customers)
                .with_for_update()
            ).all()

    def write_bulk(self, account: str, customer_ids: Sequence[str], rows: Any) -> set[date]:
        """Make these customers' rows those of a `BulkRows`; returns the days whose
        ledger rows changed (the metrics jobs' dirty days).

        Ledger rows and episodes that did not change are left as they are, with their ids
        (cursors over /v1/movements and /v1/failed-payments stay valid): existing rows are
        read once, then only what differs is deleted, updated or inserted. Subscription
        states, their MRR changes and warnings are replaced (nothing points at them).
        """
        for model in (SubscriptionMrrChange, SubscriptionState, DataQualityWarning):
            table = model.__table__
            for customers in among(self.session, table.c.customer_id, customer_ids):
                self.session.execute(table.delete().where(table.c.account == account, customers))
        for model, values in (
            (SubscriptionState, rows.states),
            (SubscriptionMrrChange, rows.changes),
            (DataQualityWarning, rows.warnings),
        ):
            if values:
                self._insert_rows(model.__table__, values)
        changed = self._sync(
            MrrMovement.__table__, account, customer_ids, rows.movements,
            ("customer_id", "currency", "day"), MOVEMENT_FIELDS,
        )  # fmt: skip
        self._sync(
            PaymentEpisode.__table__, account, customer_ids, rows.episodes,
            ("invoice_id",), EPISODE_FIELDS,
        )  # fmt: skip
        if rows.customers:
            self._upsert_customers(rows.customers)
        if rows.alerts:
            self.session.execute(
                insert_for(self.session, PaymentAlert).on_conflict_do_nothing(
                    index_elements=["account", "dedup_key"]
                ),
                rows.alerts,
            )
        return {key[2] for key in changed}

    def _sync(
        self,
        table: Any,
        account: str,
        customer_ids: Sequence[str],
        desired: list[dict[str, Any]],
        key: tuple[str, ...],
        fields: tuple[str, ...],
        *,
        since: date | None = None,
    ) -> set[tuple[Any, ...]]:
        """Rows of `table` for these customers (those from day `since` on, if given) made
        equal to `desired`, by `key`; returns the keys of the rows deleted, updated or
        inserted."""
        columns = [table.c.id, *(table.c[k] for k in key), *(table.c[f] for f in fields)]
        existing: dict[tuple[Any, ...], Any] = {}
        for customers in among(self.session, table.c.customer_id, customer_ids):
            query = select(*columns).where(table.c.account == account, customers)
            if since is not None:
                query = query.where(table.c.day >= since)
            for row in self.session.execute(query):
                existing[tuple(row._mapping[k] for k in key)] = row
        changed: set[tuple[Any, ...]] = set()
        inserts, updates = [], []
        for values in desired:
            k = tuple(values[c] for c in key)
            current = existing.pop(k, None)
            if current is None:
                inserts.append(values)
                changed.add(k)
            elif any(current._mapping[f] != values[f] for f in fields):
                updates.append({"_id": current.id, **{f"v_{f}": values[f] for f in fields}})
                changed.add(k)
        if existing:
            changed.update(existing)
            stale = [row.id for row in existing.values()]
            for ids in among(self.session, table.c.id, stale):
                self.session.execute(table.delete().where(ids))
        if updates:
            self.session.execute(
                table.update()
                .where(table.c.id == bindparam("_id"))
                .values({f: bindparam(f"v_{f}") for f in fields}),
                updates,
            )
        if inserts:
            self._insert_rows(table, inserts)
        return changed

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
        if self.session.get_bind().dialect.name == "postgresql" and len(values) <= SMALL:
            # A few rows (incremental projection): one INSERT is one round trip, where
            # COPY takes several.
            marks = ", ".join(["(" + ", ".join(["%s"] * len(names)) + ")"] * len(values))
            with raw.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {table.name} ({columns}) VALUES {marks}",
                    [v for value in values for v in value],
                    prepare=False,
                )
            return
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
        if self.session.get_bind().dialect.name == "postgresql" and len(values) <= SMALL:
            marks = ", ".join(["(" + ", ".join(["%s"] * len(names)) + ")"] * len(values))
            with raw.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {table.name} ({columns}) VALUES {marks} "
                    f"ON CONFLICT (account, customer_id) DO UPDATE SET {updates}",
                    [v for value in values for v in value],
                    prepare=False,
                )
            return
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
