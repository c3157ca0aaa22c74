"""All SQL of the metrics: the API's reads of the precomputed tables and the ledger, and
the job's reads and writes (`MetricsStore`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    BigInteger,
    Date,
    Row,
    bindparam,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    null,
    select,
    text,
    tuple_,
)
from sqlalchemy import String as SAString
from sqlalchemy.orm import Session

from service.kit.sql import chunks
from service.ledger.models import ChangedDay, MrrMovement, SubscriptionState
from service.ledger.repository import LedgerRepository
from service.metrics.models import (
    ClosedPeriod,
    MetricsChurnDaily,
    MetricsCohort,
    MetricsCounted,
    MetricsDaily,
    MetricsPeriod,
    MetricsRefresh,
    MetricsSegment,
    Restatement,
)
from service.webhooks.models import StripeEvent
from service.webhooks.repository import StripeEventRepository

if TYPE_CHECKING:
    import pandas as pd

# The flow columns of `metrics_daily`, also in `metrics_periods` (summed per period).
DAILY_SUMS = (
    "new_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr", "reactivation_mrr",
    "new_customers", "reactivated_customers", "churned_customers", "expansions",
    "contractions", "unconverted_movements",
)  # fmt: skip
# Per-period values beside the daily flows in `metrics_periods`.
PERIOD_SUMS = ("customer_days", "customers_lost", "customers_gained")
TABLES = (MetricsSegment, MetricsDaily, MetricsPeriod, MetricsChurnDaily, MetricsCohort)
# Per table of `Tables`: the model, its key beside (account, reporting_currency), the
# column a read narrows on beside the segment, and its summed values.
PERIOD_VALUES = ("customers_lost", "customers_gained", *DAILY_SUMS, "customer_days")
COHORT_VALUES = ("cohort_customers", "initial_mrr", "active_customers", "cohort_mrr")
SUMMED: dict[str, tuple[Any, tuple[str, ...], tuple[str, ...]]] = {
    "segments": (MetricsSegment, ("segment",), ("customers",)),
    "daily": (MetricsDaily, ("segment", "day"), DAILY_SUMS),
    "periods": (MetricsPeriod, ("segment", "interval", "period_start"), PERIOD_VALUES),
    "churn": (MetricsChurnDaily, ("segment", "day", "reason", "feedback"),
              ("churns", "churned_mrr")),
    "cohorts": (MetricsCohort, ("segment", "cohort_month", "months_since_start"),
                COHORT_VALUES),
}  # fmt: skip
# Bound parameters per IN list: under SQLite's limit (32,766) with room for the rest.
CHUNK = 5_000


@dataclass
class Tables:
    """One reporting currency's precomputed rows, as frames named like the tables (what
    the job computes and `MetricsStore.replace` writes)."""

    segments: pd.DataFrame
    daily: pd.DataFrame
    periods: pd.DataFrame
    churn: pd.DataFrame
    cohorts: pd.DataFrame
    # customer_id → segment of every customer counted (what `metrics_counted` keeps).
    customers: pd.Series | None = None


@dataclass(frozen=True, slots=True)
class Freshness:
    as_of: int | None  # Stripe `created` of the newest event the refresh read
    refreshed_at: datetime | None  # None: never computed
    through: date | None
    stale: bool  # a refresh is pending: marks wait
    stale_since_ms: int | None = None  # when the oldest waiting mark was written

    def stale_seconds(self, now_ms: int) -> float | None:
        """How far behind the tables are: since the oldest change they miss; None when
        fresh."""
        if not self.stale:
            return None
        if self.stale_since_ms is None:  # marks from before 0010 carry no time
            return 0.0
        return max(0, now_ms - self.stale_since_ms) / 1000


class MetricsRepository:
    """Reads for the API. `segments=None` means every segment."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def freshness(self, account: str) -> Freshness:
        """The account's refresh record and whether ledger changes wait for the next one,
        in one round trip (every answer needs both)."""
        row = self.session.execute(_freshness_statement(), {"account": account}).one()
        return Freshness(
            as_of=row[0], refreshed_at=row[1], through=row[2], stale=bool(row[3]),
            stale_since_ms=row[4],
        )  # fmt: skip

    def unconverted_currencies(self, account: str, currency: str, before: date) -> list[str]:
        return LedgerRepository(self.session).unconverted_currencies(account, currency, before)

    def overview(self) -> tuple[int | None, int | None]:
        """Across accounts: when the oldest waiting mark was written (unix ms; None when
        every table is fresh), and the duration of the newest refresh (ms)."""
        oldest = self.session.scalar(select(func.min(ChangedDay.marked_at)))
        if oldest is None and self.session.scalar(select(ChangedDay.id).limit(1)) is not None:
            oldest = 0  # marks from before 0010 carry no time
        r = MetricsRefresh
        last = self.session.scalar(select(r.duration_ms).order_by(r.refreshed_at.desc()).limit(1))
        return oldest, last

    def reporting_currencies(self, account: str) -> set[str]:
        stmt = select(MetricsSegment.reporting_currency).where(MetricsSegment.account == account)
        return set(self.session.scalars(stmt.distinct()))

    def segments(self, account: str, currency: str) -> Sequence[MetricsSegment]:
        return self.session.scalars(
            select(MetricsSegment)
            .where(MetricsSegment.account == account, MetricsSegment.reporting_currency == currency)
            .order_by(MetricsSegment.segment)
        ).all()

    def plan_names(self, account: str, plans: Sequence[str]) -> dict[str, str]:
        """Each plan (price id) with the name the newest subscription on it carries: one
        row per distinct (plan, name), so renames are few rows, never one per
        subscription."""
        t = SubscriptionState
        found: dict[str, tuple[int, str]] = {}
        for part in chunks(list(plans), 500):
            rows = self.session.execute(
                select(t.plan, t.plan_name, func.max(func.coalesce(t.started_at, 0)))
                .where(t.account == account, t.plan.in_(part), t.plan_name.is_not(None))
                .group_by(t.plan, t.plan_name)
            )
            for plan, name, newest in rows:
                if plan not in found or (newest, name) > found[plan]:
                    found[plan] = (newest, name)
        return {plan: name for plan, (_, name) in found.items()}

    def _where(self, table: Any, account: str, currency: str, segments: list[str] | None) -> list:
        clauses = [table.account == account, table.reporting_currency == currency]
        if segments is not None:
            clauses.append(table.segment.in_(segments))
        return clauses

    def daily(
        self,
        account: str,
        currency: str,
        segments: list[str] | None,
        start: date,
        end: date,
        labels: dict[str, str | None] | None = None,
    ) -> Sequence[Row[Any]]:
        """Flows per (label, day) in [start, end), plus one row per label (day NULL) with the
        sums of every earlier day: the opening balance. `labels` maps segments to their
        `segment_by` value; without it everything is one label (NULL)."""
        stmt = _flows(MetricsDaily, segments is not None, labels)
        params: dict[str, Any] = {"account": account, "currency": currency}
        params.update(start=start, end=end)
        if segments is not None:
            params["segments"] = segments
        return self.session.execute(stmt, params).all()

    def periods(
        self,
        account: str,
        currency: str,
        segments: list[str] | None,
        interval: str,
        start: date,
        end: date,
        labels: dict[str, str | None] | None = None,
    ) -> Sequence[Row[Any]]:
        """Like `daily`, from `metrics_periods` (one row per segment and period rather than
        per day): rows (label, period_start, *DAILY_SUMS, *PERIOD_SUMS) per period starting
        in [start, end), and per label one opening row (period_start NULL) summing every
        earlier period. `start` must be a period start of `interval`."""
        stmt = _flows(MetricsPeriod, segments is not None, labels)
        params: dict[str, Any] = {"account": account, "currency": currency}
        params.update(start=start, end=end, interval=interval)
        if segments is not None:
            params["segments"] = segments
        return self.session.execute(stmt, params).all()

    def churn_reasons(
        self, account: str, currency: str, segments: list[str] | None, start: date, end: date
    ) -> Sequence[MetricsChurnDaily]:
        t = MetricsChurnDaily
        where = self._where(t, account, currency, segments)
        return self.session.scalars(select(t).where(*where, t.day >= start, t.day < end)).all()

    def cohorts(
        self, account: str, currency: str, segments: list[str] | None, start: date, end: date
    ) -> Sequence[MetricsCohort]:
        t = MetricsCohort
        where = self._where(t, account, currency, segments)
        stmt = select(t).where(*where, t.cohort_month >= start, t.cohort_month < end)
        return self.session.scalars(stmt).all()

    def churn_by_day(
        self, account: str, currency: str, start: date, end: date
    ) -> Sequence[Row[Any]]:
        """(day, reason, feedback, churns, churned_mrr) in [start, end), summed over the
        segments: the whole account, as closed months keep it."""
        t = MetricsChurnDaily
        stmt = (
            select(t.day, t.reason, t.feedback, func.sum(t.churns), func.sum(t.churned_mrr))
            .where(*self._where(t, account, currency, None), t.day >= start, t.day < end)
            .group_by(t.day, t.reason, t.feedback)
        )
        return self.session.execute(stmt).all()

    def cohort_cells(self, account: str, currency: str, before: date) -> Sequence[Row[Any]]:
        """(cohort_month, months_since_start, *COHORT_VALUES) of the cohorts starting
        before `before`, summed over the segments."""
        t = MetricsCohort
        sums = [func.sum(getattr(t, c)) for c in COHORT_VALUES]
        stmt = (
            select(t.cohort_month, t.months_since_start, *sums)
            .where(*self._where(t, account, currency, None), t.cohort_month < before)
            .group_by(t.cohort_month, t.months_since_start)
        )
        return self.session.execute(stmt).all()

    # --- the ledger itself (/v1/movements) ---------------------------------------------

    def movements(
        self,
        account: str,
        *,
        start: date | None,
        end: date | None,
        movement: str | None,
        customer: str | None,
        currency_code: str | None,
        after: tuple[date, int] | None,
        limit: int,
    ) -> Sequence[MrrMovement]:
        t = MrrMovement
        clauses: list[Any] = [t.account == account]
        if start:
            clauses.append(t.day >= start)
        if end:
            clauses.append(t.day < end)
        if movement:
            clauses.append(t.movement == movement)
        if customer:
            clauses.append(t.customer_id == customer)
        if currency_code:
            clauses.append(t.currency == currency_code)
        if after:
            clauses.append(tuple_(t.day, t.id) > tuple_(literal(after[0]), literal(after[1])))
        stmt = select(t).where(*clauses).order_by(t.day, t.id).limit(limit)
        return self.session.scalars(stmt).all()

    def newest_handled_event(self, account: str) -> int | None:
        return StripeEventRepository(self.session).newest_handled(account)

    # --- explain: the ledger behind one figure -----------------------------------------

    def explain_ledger(
        self, account: str, currency: str, start: date | None, end: date
    ) -> tuple[Sequence[MrrMovement], Sequence[SubscriptionState]]:
        """Every ledger row in `currency` (reporting) of the customers with a row in
        [start, end) (before `end` when `start` is None), all their days: whether a
        series is left out unconverted depends on all of its rows. And the customers'
        subscription states, which place them in their segment. Rows ordered by
        (customer, day, currency), as the refresh reads them."""
        t = MrrMovement
        window = [t.account == account, t.reporting_currency == currency, t.day < end]
        if start is not None:
            window.append(t.day >= start)
        customers = select(t.customer_id).where(*window).distinct()
        rows = self.session.scalars(
            select(t)
            .where(
                t.account == account,
                t.reporting_currency == currency,
                t.customer_id.in_(customers),
            )
            .order_by(t.customer_id, t.day, t.currency, t.id)
        ).all()
        s = SubscriptionState
        states = self.session.scalars(
            select(s).where(s.account == account, s.customer_id.in_(customers))
        ).all()
        return rows, states


class PeriodsRepository:
    """Closed months and their restatements (all their SQL)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def closed(self, account: str, currency: str | None = None) -> Sequence[ClosedPeriod]:
        t = ClosedPeriod
        where = [t.account == account]
        if currency is not None:
            where.append(t.reporting_currency == currency)
        stmt = select(t).where(*where).order_by(t.reporting_currency, t.period)
        return self.session.scalars(stmt).all()

    def get(self, account: str, currency: str, period: date) -> ClosedPeriod | None:
        return self.session.get(ClosedPeriod, (account, currency, period))

    def add(self, row: ClosedPeriod | Restatement) -> None:
        self.session.add(row)
        self.session.flush()

    def restatements(
        self,
        account: str,
        currency: str | None = None,
        period: date | None = None,
        *,
        after_id: int | None = None,
        limit: int | None = None,
    ) -> Sequence[Restatement]:
        """Oldest first; `after_id` and `limit` read them in keyset batches."""
        t = Restatement
        where = [t.account == account]
        if currency is not None:
            where.append(t.reporting_currency == currency)
        if period is not None:
            where.append(t.period == period)
        if after_id is not None:
            where.append(t.id > after_id)
        return self.session.scalars(select(t).where(*where).order_by(t.id).limit(limit)).all()

    def rows_until(
        self, account: str, currency: str, end: date, customers: Sequence[str]
    ) -> Sequence[tuple[str, date, list[str]]]:
        """(customer, day, event ids) of these customers' ledger rows before `end`."""
        if not customers:
            return []
        t = MrrMovement
        out = []
        for part in _chunks(customers):  # SQLite caps a statement's parameters
            stmt = select(t.customer_id, t.day, t.event_ids).where(
                t.account == account, t.reporting_currency == currency, t.day < end,
                t.customer_id.in_(part),
            )  # fmt: skip
            out += [(c, d, list(ids or [])) for c, d, ids in self.session.execute(stmt)]
        return out

    def customers_with_events_after(self, account: str, after: datetime) -> list[str]:
        e = StripeEvent
        stmt = select(e.customer_id).where(
            e.account == account, e.received_at > after, e.customer_id.is_not(None)
        )
        return sorted(set(self.session.scalars(stmt.distinct())))

    def events_received_after(
        self, account: str, after: datetime, customers: Sequence[str]
    ) -> Sequence[tuple[str, str | None]]:
        """(event id, customer) of the customers' events received after `after`, in the
        order they were stored."""
        e = StripeEvent
        found: list[tuple[int, str, str | None]] = []
        for part in _chunks(customers):  # SQLite caps a statement's parameters
            stmt = select(e.id, e.event_id, e.customer_id).where(
                e.account == account, e.received_at > after, e.customer_id.in_(part)
            )
            found += [(n, i, c) for n, i, c in self.session.execute(stmt)]
        return [(i, c) for _, i, c in sorted(found)]


class MetricsStore(MetricsRepository):
    """The job's side: the ledger as frames, replacing an account's tables."""

    def ledger_accounts(self) -> list[str]:
        return list(self.session.scalars(select(MrrMovement.account).distinct()))

    def lock_account(self, account: str) -> None:
        """Serialize refreshes of this account until the transaction ends. PostgreSQL: an
        advisory lock (the schema in its key: locks are per database, and two schemas must
        not wait for each other). SQLite: the database write lock, taken now, before
        anything is read."""
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(
                text(
                    "SELECT pg_advisory_xact_lock(hashtextextended("
                    "current_schema() || chr(31) || 'metrics' || chr(31) || :account, 7412))"
                ),
                {"account": account},
            )
        else:
            table = ChangedDay.__table__
            # A write that changes nothing still takes the lock.
            self.session.execute(table.delete().where(table.c.id == -1))

    def marks(self, account: str) -> list[tuple[int, date | None, str | None]]:
        """The account's marks (id, day, customer): a refresh clears those it read and no
        other. Not "every id up to the newest": on PostgreSQL ids are taken at insert,
        not at commit, so a lower id can commit after a higher one was read."""
        c = ChangedDay
        stmt = select(c.id, c.day, c.customer_id).where(c.account == account)
        return [(row[0], row[1], row[2]) for row in self.session.execute(stmt)]

    def clear_marks(self, ids: Sequence[int]) -> None:
        table = ChangedDay.__table__
        for part in _chunks(sorted(ids)):
            self.session.execute(table.delete().where(table.c.id.in_(part)))

    def refresh_record(self, account: str) -> MetricsRefresh | None:
        return self.session.get(MetricsRefresh, account)

    def newest_ledger_day(self, account: str) -> date | None:
        stmt = select(func.max(MrrMovement.day)).where(MrrMovement.account == account)
        return self.session.scalar(stmt)

    def ledger_customers(self, account: str, limit: int) -> set[str]:
        """Up to `limit` of the account's customers with ledger rows."""
        t = MrrMovement
        stmt = select(t.customer_id).where(t.account == account).distinct().limit(limit)
        return set(self.session.scalars(stmt))

    def customers_on_days(self, account: str, days: Sequence[date]) -> set[str]:
        """Customers with ledger rows on these days, now or as last counted (an FX
        recomputation changed their reporting amounts)."""
        out: set[str] = set()
        for t in (MrrMovement, MetricsCounted):
            for part in _chunks(sorted(set(days))):
                stmt = select(t.customer_id).where(t.account == account, t.day.in_(part))
                out.update(self.session.scalars(stmt.distinct()))
        return out

    def refreshed_through(self, account: str) -> date | None:
        return self.session.scalar(
            select(MetricsRefresh.through).where(MetricsRefresh.account == account)
        )

    def dirty_accounts(self) -> list[str]:
        return list(self.session.scalars(select(ChangedDay.account).distinct()))

    def outdated_accounts(self, today: date) -> list[str]:
        """Accounts whose tables end before today: their current periods grew a day."""
        stmt = select(MetricsRefresh.account).where(MetricsRefresh.through < today)
        return list(self.session.scalars(stmt))

    def accounts_to_refresh(self) -> list[str]:
        dirty = select(ChangedDay.account)
        never = select(MrrMovement.account).where(
            MrrMovement.account.not_in(select(MetricsRefresh.account))
        )
        return list(self.session.scalars(dirty.union(never)))

    def _frame(self, stmt: Any) -> pd.DataFrame:
        import pandas as pd  # the job's alone: the API server need not load it

        return pd.read_sql(stmt, self.session.connection())

    def ledger_frame(self, account: str) -> pd.DataFrame:
        """The account's ledger, sorted by customer, day and currency."""
        t = MrrMovement
        stmt = (
            select(
                t.customer_id, t.currency, t.day, cast(t.movement, SAString).label("movement"),
                t.from_mrr, t.to_mrr, t.delta_reporting, t.reporting_currency,
                cast(t.churn_reason, SAString).label("churn_reason"), t.churn_feedback,
            )
            .where(t.account == account)
            .order_by(t.customer_id, t.day, t.currency)
        )  # fmt: skip
        return _ledger_types(self._frame(stmt))

    def ledger_rows(self, account: str, customers: Sequence[str]) -> list[Row[Any]]:
        """These customers' ledger rows (fields of `recount.Row`), sorted by customer,
        day and currency."""
        t = MrrMovement
        return self._rows(
            select(
                t.customer_id, t.currency, t.day, cast(t.movement, SAString).label("movement"),
                t.from_mrr, t.to_mrr, t.delta_reporting, t.reporting_currency,
                cast(t.churn_reason, SAString).label("churn_reason"), t.churn_feedback,
            ).where(t.account == account),
            t.customer_id, customers, (t.customer_id, t.day, t.currency),
        )  # fmt: skip

    def counted_rows(self, account: str, customers: Sequence[str]) -> list[Row[Any]]:
        """These customers' rows as last counted: `ledger_rows` plus `segment`."""
        t = MetricsCounted
        return self._rows(
            select(
                t.customer_id, t.currency, t.day, t.movement, t.from_mrr, t.to_mrr,
                t.delta_reporting, t.reporting_currency, t.churn_reason, t.churn_feedback,
                t.segment,
            ).where(t.account == account),
            t.customer_id, customers, (t.customer_id, t.day, t.currency),
        )  # fmt: skip

    def state_rows(self, account: str, customers: Sequence[str]) -> list[Row[Any]]:
        """These customers' subscription states (fields of `recount.State`)."""
        t = SubscriptionState
        return self._rows(
            select(
                t.customer_id, t.subscription_id, t.currency.label("sub_currency"), t.mrr,
                t.plan, t.billing_interval, t.started_at, t.ended_at,
                cast(t.metadata_, SAString).label("metadata"),
            ).where(t.account == account),
            t.customer_id, customers, (t.customer_id, t.subscription_id),
        )  # fmt: skip

    def _rows(
        self, stmt: Any, column: Any, customers: Sequence[str], order: tuple[Any, ...]
    ) -> list[Row[Any]]:
        out: list[Row[Any]] = []
        for part in _chunks(sorted(customers)):
            out += self.session.execute(stmt.where(column.in_(part))).all()
        # Sorted here, not by ORDER BY: with one, SQLite may walk the (account, day)
        # index of the whole ledger in order instead of looking the customers up.
        names = [c.key for c in order]
        out.sort(key=lambda r: tuple(getattr(r, n) for n in names))
        return out

    def states_frame(self, account: str) -> pd.DataFrame:
        t = SubscriptionState
        return self._frame(
            select(
                t.customer_id, t.subscription_id, t.currency.label("sub_currency"), t.mrr,
                t.plan, t.billing_interval, t.started_at, t.ended_at,
                cast(t.metadata_, SAString).label("metadata"),
            ).where(t.account == account)
        )  # fmt: skip

    def replace_counted(
        self, account: str, customers: Sequence[str] | None, rows: pd.DataFrame | list[dict]
    ) -> None:
        """What the tables now count: `rows` (ledger rows with `segment`, a frame or
        records) replace the account's (these customers', when given)."""
        t = MetricsCounted
        if customers is None:
            self.session.execute(delete(t).where(t.account == account))
        else:
            for part in _chunks(sorted(customers)):
                self.session.execute(delete(t).where(t.account == account, t.customer_id.in_(part)))
        if isinstance(rows, list):
            records = [{**r, "account": account} for r in rows]
            if records:
                self._insert(t, records)
            return
        self._bulk_insert(t.__table__, rows.assign(account=account))

    def _bulk_insert(self, table: Any, frame: pd.DataFrame) -> None:
        """Many rows (a whole ledger's) through the driver: COPY on PostgreSQL, one
        executemany of tuples on SQLite; through SQLAlchemy it took most of a whole
        refresh (30 s at 300k rows on PostgreSQL)."""
        if frame.empty:
            return
        names = [c.name for c in table.columns]
        out = frame[names].copy()
        for column in names:
            if out[column].dtype.kind == "M":
                out[column] = out[column].dt.date
        rows = list(out.astype(object).where(out.notna(), None).itertuples(index=False))
        connection = self.session.connection().connection
        quoted = ", ".join(f'"{n}"' for n in names)
        if self.session.get_bind().dialect.name == "postgresql":
            statement = f'COPY "{table.name}" ({quoted}) FROM STDIN'
            with connection.cursor() as cursor, cursor.copy(statement) as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" for _ in names)
            cursor = connection.cursor()
            # Dates as ISO text, as SQLAlchemy stores them on SQLite.
            rows = [tuple(v.isoformat() if isinstance(v, date) else v for v in r) for r in rows]
            cursor.executemany(f'INSERT INTO "{table.name}" ({quoted}) VALUES ({marks})', rows)

    def apply(
        self, account: str, currency: str, changes: dict[str, dict[tuple, list[int]]],
        segments: dict[str, dict[str, Any]],
    ) -> None:  # fmt: skip
        """Add `changes` (per table of `Tables`: key → change of each summed value) to
        the stored rows: a row that comes to all zeros goes, as the full computation
        leaves such rows out; a new one is inserted. `segments`: the attributes of
        segments a new row may need (plan, billing interval, ...)."""
        for name, (table, keys, values) in SUMMED.items():
            delta = changes.get(name)
            if not delta:
                continue
            stored = self._stored(table, account, currency, keys, values, delta)
            updates, inserts, deletes = [], [], []
            base = {"account": account, "reporting_currency": currency}
            for key, change in delta.items():
                before = stored.get(key)
                after = [b + c for b, c in zip(before or [0] * len(values), change, strict=True)]
                ids = {**base, **dict(zip(keys, key, strict=True))}
                if not any(after):
                    if before:
                        deletes.append(ids)
                    continue
                row = {**ids, **dict(zip(values, after, strict=True))}
                (updates if before else inserts).append(row)
            if table is MetricsSegment:
                inserts = [{**segments[row["segment"]], **row} for row in inserts]
            self._write(table, (*base, *keys), updates, inserts, deletes)

    def _stored(
        self, table: Any, account: str, currency: str, keys: tuple[str, ...],
        values: tuple[str, ...], changes: dict[tuple, Any],
    ) -> dict[tuple, list[int]]:  # fmt: skip
        """The stored rows among `changes`' keys: read by segment and, where the key has
        one, its date column (a superset), then matched exactly."""
        segments = sorted({key[0] for key in changes})
        narrow = next((k for k in keys if k in ("day", "period_start", "cohort_month")), None)
        dates = sorted({key[keys.index(narrow)] for key in changes}) if narrow else [None]
        columns = [getattr(table, k) for k in (*keys, *values)]
        where = [table.account == account, table.reporting_currency == currency]
        out = {}
        for segs in _chunks(segments, CHUNK // 2):
            for part in _chunks(dates, CHUNK // 2):
                clauses = [*where, table.segment.in_(segs)]
                if narrow:
                    clauses.append(getattr(table, narrow).in_(part))
                for row in self.session.execute(select(*columns).where(*clauses)):
                    key = tuple(row[: len(keys)])
                    if key in changes:
                        out[key] = list(row[len(keys) :])
        return out

    def _write(
        self, table: Any, keys: tuple[str, ...], updates: list[dict], inserts: list[dict],
        deletes: list[dict],
    ) -> None:  # fmt: skip
        t = table.__table__
        match = [t.c[k] == bindparam(f"k_{k}") for k in keys]

        def bound(rows: list[dict]) -> list[dict]:
            return [{(f"k_{k}" if k in keys else k): v for k, v in r.items()} for r in rows]

        if deletes:
            self.session.execute(t.delete().where(*match), bound(deletes))
        if updates:
            columns = {c: bindparam(c) for c in updates[0] if c not in keys}
            self.session.execute(t.update().where(*match).values(columns), bound(updates))
        if inserts:
            self._insert(table, inserts)

    def replace(self, account: str, by_currency: dict[str, Tables]) -> None:
        """The account's tables replaced whole by these."""
        for table in TABLES:
            self.session.execute(delete(table).where(table.account == account))
        for currency, tables in by_currency.items():
            keys = {"account": account, "reporting_currency": currency}
            for table, frame in (
                (MetricsSegment, tables.segments.rename(columns={"metadata": "metadata_"})),
                (MetricsDaily, tables.daily),
                (MetricsPeriod, tables.periods),
                (MetricsChurnDaily, tables.churn),
                (MetricsCohort, tables.cohorts),
            ):
                records = _records(frame, keys)
                if records:
                    self._insert(table, records)

    def _insert(self, model: Any, records: list[dict[str, Any]]) -> None:
        """One executemany through Core: the ORM's bulk insert runs one statement per
        row on these tables (keys without autoincrement), 4.5 s for 30k rows."""
        names = {a.key: c.name for a, c in zip(model.__mapper__.column_attrs,
                                               model.__mapper__.columns, strict=True)}  # fmt: skip
        if any(k != v for k, v in names.items()):
            records = [{names[k]: v for k, v in r.items()} for r in records]
        self.session.execute(insert(model.__table__), records)

    def record_refresh(
        self, account: str, *, as_of: int | None, through: date, rows: int,
        duration_ms: int | None = None,
    ) -> None:  # fmt: skip
        refresh = self.session.get(MetricsRefresh, account) or MetricsRefresh(account=account)
        refresh.refreshed_at = datetime.now(UTC)
        refresh.as_of = as_of
        refresh.through = through
        refresh.ledger_rows = rows
        refresh.duration_ms = duration_ms
        refresh.counted = True
        self.session.add(refresh)


@cache
def _freshness_statement() -> Any:
    r = MetricsRefresh

    def of(column: Any) -> Any:
        return select(column).where(r.account == bindparam("account")).scalar_subquery()

    marks = ChangedDay.account == bindparam("account")
    dirty = exists().where(marks)
    oldest = select(func.min(ChangedDay.marked_at)).where(marks).scalar_subquery()
    return select(of(r.as_of), of(r.refreshed_at), of(r.through), dirty, oldest)


def _flows(table: Any, segments: bool, labels: dict[str, str | None] | None) -> Any:
    # Unlabelled statements are built once: building and cache-keying this statement cost
    # more than PostgreSQL takes to run it.
    return _flows_statement(table, segments, labels) if labels else _unlabelled(table, segments)


@cache
def _unlabelled(table: Any, segments: bool) -> Any:
    return _flows_statement(table, segments, None)


def _flows_statement(table: Any, segments: bool, labels: dict[str, str | None] | None) -> Any:
    """Sums per (label, day or period) from `start` to `end`, and per label an opening row
    (its day or period NULL) summing everything before `start`. Bound parameters: account,
    currency, start, end, and segments (a list) and interval where they apply."""
    t = table
    key = t.day if t is MetricsDaily else t.period_start
    columns = DAILY_SUMS if t is MetricsDaily else (*DAILY_SUMS, *PERIOD_SUMS)
    label: Any = cast(null(), SAString)
    if labels:
        whens = [(t.segment == k, literal(v, SAString)) for k, v in labels.items()]
        label = case(*whens, else_=None)
    where = [
        t.account == bindparam("account"),
        t.reporting_currency == bindparam("currency"),
        key < bindparam("end"),
    ]
    if segments:
        where.append(t.segment.in_(bindparam("segments", expanding=True)))
    if t is MetricsPeriod:
        where.append(t.interval == bindparam("interval"))
    base = (
        select(label.label("label"), key, *(getattr(t, c) for c in columns))
        .where(*where)
        .subquery()
    )
    at = base.c[key.key]
    sums = [_sum(base.c[c]).label(c) for c in columns]
    opening = select(base.c.label, cast(null(), Date).label(key.key), *sums).where(
        at < bindparam("start")
    )
    period = select(base.c.label, at, *sums).where(at >= bindparam("start"))
    return opening.group_by(base.c.label).union_all(period.group_by(base.c.label, at))


def _sum(column: Any) -> Any:
    # PostgreSQL sums bigints as numeric: cast back so that rows carry ints, not Decimals.
    return cast(func.sum(column), BigInteger)


def _chunks(items: Sequence[Any], size: int = CHUNK) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _ledger_types(frame: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    frame["day"] = pd.to_datetime(frame["day"])
    # NULL reporting amounts must stay NULL (counted, never summed as 0).
    frame["delta_reporting"] = frame["delta_reporting"].astype("Int64")
    return frame


def _records(frame: pd.DataFrame, extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Plain Python values (drivers do not take numpy scalars), datetimes as dates."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype.kind == "M":
            out[column] = out[column].dt.date
    out = out.astype(object).where(out.notna(), None)
    return [{**extra, **row} for row in out.to_dict("records")]
