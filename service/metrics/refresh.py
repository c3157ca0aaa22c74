"""Keeping the metric tables fresh (design §10): the refresh of one account, the batch job
(`churn-ledger jobs run`) built on it, and `MetricsRefresher`, which runs it right after
the projector's passes, debounced, in whatever process projects.

The projector marks the customers it rewrote (`LedgerRepository.mark_changed`) in its own
transaction; a refresh counts what it read and clears only the marks it saw, so a change
committed while it runs is refreshed next time. Refreshes of one account are serialized:
on PostgreSQL by an advisory lock held to the commit, on SQLite by its write lock, taken
before anything is read (a read transaction that later writes fails with "database is
locked" when another writer got in between).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.metrics.closing import restate
from service.metrics.repository import MetricsStore
from service.settings import Settings

log = logging.getLogger("churn_ledger.metrics")


@dataclass
class RefreshResult:
    accounts: list[str] = field(default_factory=list)
    ledger_rows: int = 0
    seconds: float = 0.0


@dataclass
class AccountRefresh:
    account: str
    refreshed: bool  # False: nothing was waiting (another refresh got there first)
    ledger_rows: int = 0
    seconds: float = 0.0
    incremental: bool = False  # only the marked customers were recounted
    customers: int = 0  # how many were (incremental)


def today_utc() -> date:
    return datetime.now(UTC).date()


# An incremental refresh recounts up to this many customers, or a tenth of the account's
# ledger rows' worth, before a whole recomputation is the cheaper path: recounting costs
# ~0.2 ms a customer, a whole recomputation ~1 s fixed (pandas) plus ~50 µs a ledger row.
# Set low, a burst of marks makes the next round whole, slow, and the round after it
# (resting in proportion) larger still.
INCREMENTAL_CUSTOMERS = 5_000
INCREMENTAL_SHARE = 0.1


def refresh_account(
    session: Session, account: str, *, today: date | None = None, force: bool = False
) -> AccountRefresh:
    """Refresh one account's tables from its ledger, in the caller's transaction (the
    caller commits): the one entry point of every refresh. Waits for a concurrent refresh
    of the account to commit, then does nothing if it left nothing to do (no marks, and
    `through` is today already), unless `force`.

    Incremental when it can be: only the marked customers are recounted (what their rows
    as last counted added is taken off, what their rows now add is put on), as long as
    `through` stays the same day (it moves every customer's exposure). A whole
    recomputation otherwise: `force`, `through` moved, or too many customers marked
    (or, never computed, in the ledger)."""
    started = time.perf_counter()
    store = MetricsStore(session)
    store.lock_account(account)
    today = today or today_utc()
    marks = store.marks(account)
    record = store.refresh_record(account)
    if not force and not marks and record is not None and record.through == today:
        return AccountRefresh(account, refreshed=False)
    # Read the freshness first: the ledger read after it includes at least that much.
    as_of = store.newest_handled_event(account)
    newest = store.newest_ledger_day(account)
    through = today if newest is None else max(today, newest)
    customers = {c for _, _, c in marks if c is not None}
    days = [d for _, d, _ in marks if d is not None]
    if days:
        customers |= store.customers_on_days(account, days)
    if record is None and not force:
        # Never computed: no tables, nothing counted, so counting every customer of
        # the ledger from nothing is exact (and, for a new account, cheap).
        customers = store.ledger_customers(account, INCREMENTAL_CUSTOMERS + 1)
    limit = max(INCREMENTAL_CUSTOMERS, INCREMENTAL_SHARE * (record.ledger_rows if record else 0))
    incremental = (
        not force
        and (record is None or (record.counted and record.through == through))
        and len(customers) <= limit
    )
    if incremental:
        base = record.ledger_rows if record is not None else 0
        rows = base + _recount(store, account, sorted(customers), through)
    else:
        rows = _recompute(store, account, through)
    took = round((time.perf_counter() - started) * 1000)
    store.record_refresh(account, as_of=as_of, through=through, rows=rows, duration_ms=took)
    if marks:
        store.clear_marks([i for i, _, _ in marks])
    session.flush()
    # The tables are current here: checks on what changed (closed-period restatements)
    # belong between this point and the return.
    restate(session, account, today)
    seconds = time.perf_counter() - started
    return AccountRefresh(account, True, rows, seconds, incremental, len(customers))


def _recompute(store: MetricsStore, account: str, through: date) -> int:
    """Every table of the account from its whole ledger; returns the rows counted."""
    from service.metrics.compute import compute  # pandas: loaded by whoever refreshes

    ledger = store.ledger_frame(account)
    states = store.states_frame(account)
    by_currency = {
        str(rc): compute(rows, states, through)
        for rc, rows in ledger.groupby("reporting_currency", sort=True)
    }
    store.replace(account, by_currency)
    store.replace_counted(account, None, _with_segments(ledger, by_currency))
    return len(ledger)


def _recount(store: MetricsStore, account: str, customers: list[str], through: date) -> int:
    """These customers' share of the tables replaced by what their rows add now (what
    their rows as last counted added is taken off); returns the change in rows counted."""
    if not customers:
        return 0
    # Plain Python (no pandas): a few customers' rows are a short walk.
    from service.metrics.recount import Contributions, Row, State, by_customer, segment_of

    fields = Row.__slots__
    before = by_customer(store.counted_rows(account, customers))
    now = by_customer(store.ledger_rows(account, customers))
    states: dict[str, list[State]] = {}
    for s in store.state_rows(account, customers):
        states.setdefault(s.customer_id, []).append(State(*s))
    sums: dict[str, Contributions] = {}
    attrs: dict[str, dict[str, Any]] = {}
    counted: list[dict[str, Any]] = []
    for (_, rc), rows in before.items():
        old = [Row(*r[: len(fields)]) for r in rows]
        sums.setdefault(rc, Contributions(through)).add(old, rows[0].segment, -1)
    for (customer, rc), rows in now.items():
        new = [Row(*r) for r in rows]
        segment, attrs[segment] = segment_of(new, states.get(customer, []))
        sums.setdefault(rc, Contributions(through)).add(new, segment, +1)
        counted += [{**r._asdict(), "segment": segment} for r in rows]
    for rc, contributions in sorted(sums.items()):
        store.apply(account, rc, contributions.changes(), attrs)
    store.replace_counted(account, customers, counted)
    return sum(map(len, now.values())) - sum(map(len, before.values()))


def _with_segments(ledger: Any, by_currency: dict[str, Any]) -> Any:
    """The ledger rows with the segment each row's customer was counted in."""
    import pandas as pd

    parts = []
    for rc, tables in by_currency.items():
        rows = ledger[ledger["reporting_currency"] == rc]
        parts.append(rows.assign(segment=rows["customer_id"].map(tables.customers)))
    if not parts:
        return ledger.assign(segment=pd.Series(dtype=object))
    return pd.concat(parts, ignore_index=True)


def refresh(
    session: Session,
    *,
    accounts: Iterable[str] | None = None,
    full: bool = False,
    today: date | None = None,
) -> RefreshResult:
    """Refresh the accounts with marks or never computed (every account with `full`), in
    the caller's transaction."""
    started = time.perf_counter()
    store = MetricsStore(session)
    force = full or accounts is not None
    if accounts is None:
        # A full run always covers the platform account, so that even an empty ledger
        # answers "computed, nothing there" rather than "never computed".
        accounts = ["", *store.ledger_accounts()] if full else store.accounts_to_refresh()
    result = RefreshResult()
    for account in sorted(set(accounts)):
        done = refresh_account(session, account, today=today, force=force)
        if done.refreshed:
            result.accounts.append(account)
            result.ledger_rows += done.ledger_rows
    result.seconds = time.perf_counter() - started
    return result


SQLITE_REST_FACTOR = 3.0


def _rest_factor(configured: float | None, gate: Any) -> float:
    # Resting is for SQLite, where a round holds the one write lock that the receiver and
    # the projector wait on. PostgreSQL's refresh locks only its own advisory lock and
    # the metric rows: resting there only delays the next answer (at 200 events/s,
    # rounds of ~0.5 s rested 1.5 s each and freshness p99 was 6 s instead of ~1.5 s).
    if configured is not None:
        return configured
    return SQLITE_REST_FACTOR if gate is not None else 0.0


class MetricsRefresher:
    """Refreshes, in a thread, the accounts the projector marked: `poke()` after each
    projector pass; the refresh runs once pokes have paused for `debounce_s`, and at most
    `max_delay_s` after the first (a steady stream of events still sees fresh metrics).
    It also polls every `poll_s` for marks written elsewhere (FX rates, another process)
    and for tables whose `through` is before today (the day rolled over).

    After a round that took d seconds the next waits at least `rest_factor` × d: most
    rounds are incremental (milliseconds), but a whole recomputation (the day rolled over,
    a large batch) takes seconds at 100k customers on SQLite, holding the write lock, and
    back-to-back rounds would leave the receiver and the projector the lock only between
    them. With 3 (SQLite's default), refreshing takes at most a quarter of the time."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        gate: Any = None,
        debounce_s: float = 0.2,
        max_delay_s: float = 1.0,
        poll_s: float = 5.0,
        rest_factor: float = 3.0,
        on_refresh: Callable[[AccountRefresh], None] | None = None,
    ) -> None:
        self._factory = session_factory
        self._gate = gate or contextlib.nullcontext()
        self._debounce_s = debounce_s
        self._max_delay_s = max(max_delay_s, debounce_s)
        self._poll_s = poll_s
        self._rest_factor = rest_factor
        self._rest_until = 0.0  # no round before this (monotonic)
        self._on_refresh = on_refresh
        self._cond = threading.Condition()
        self._poked_at: float | None = None  # first poke not yet refreshed
        self._last_poke = 0.0
        self._busy = False  # a poke since the last round said the projector is busy
        self._stop = False
        self._thread: threading.Thread | None = None
        self._first = True
        self.last: AccountRefresh | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, session_factory: sessionmaker[Session], gate: Any = None
    ) -> MetricsRefresher | None:
        """The refresher as configured; None with METRICS_LIVE_REFRESH off."""
        if not settings.metrics_live_refresh:
            return None
        return cls(
            session_factory,
            gate=gate,
            debounce_s=settings.metrics_refresh_debounce_s,
            max_delay_s=settings.metrics_refresh_max_delay_s,
            rest_factor=_rest_factor(settings.metrics_refresh_rest_factor, gate),
        )

    @property
    def rest_factor(self) -> float:
        return self._rest_factor

    def poke(self, busy: bool = False) -> None:
        """`busy`: the projector is catching up under load. The refresh then waits for
        `max_delay_s`, not for a pause: passes spaced by their rests let every debounce
        expire, and a refresh after each pass held SQLite's write lock as long as the
        pass itself (16 customers: ~40 ms each), at the receiver's expense."""
        with self._cond:
            now = time.monotonic()
            if self._poked_at is None:
                self._poked_at = now
            self._last_poke = now
            self._busy = self._busy or busy
            self._cond.notify_all()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="metrics-refresh", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def _due(self) -> float | None:
        """Seconds until the pending refresh is due (<= 0: now); None: none pending."""
        if self._poked_at is None:
            return None
        latest = self._poked_at + self._max_delay_s
        quiet = latest if self._busy else self._last_poke + self._debounce_s
        return max(min(quiet, latest), self._rest_until) - time.monotonic()

    def _run(self) -> None:
        next_poll = time.monotonic()  # at start: whatever a previous run left marked
        while True:
            with self._cond:
                while not self._stop:
                    due = self._due()
                    if due is not None and due <= 0:
                        break
                    until_poll = max(next_poll, self._rest_until) - time.monotonic()
                    if until_poll <= 0:
                        break
                    self._cond.wait(until_poll if due is None else min(due, until_poll))
                if self._stop:
                    return
                self._poked_at = None
                self._busy = False
            started = time.monotonic()
            try:
                self.refresh_pending()
            except Exception:
                # The database may be away: the marks stay, and the next poll retries.
                log.exception("metrics refresh failed")
            ended = time.monotonic()
            self._rest_until = ended + self._rest_factor * (ended - started)
            next_poll = ended + self._poll_s

    def refresh_pending(self) -> list[AccountRefresh]:
        """One round: every account with marks, never computed (the first round only) or
        computed through a day before today; each in a transaction of its own."""
        today = today_utc()
        with self._factory() as session:
            store = MetricsStore(session)
            if self._first:
                accounts = set(store.accounts_to_refresh())
            else:
                accounts = set(store.dirty_accounts())
            accounts |= set(store.outdated_accounts(today))
            session.rollback()
        self._first = False
        done = []
        for account in sorted(accounts):
            with self._gate, self._factory() as session:
                result = refresh_account(session, account, today=today)
                session.commit()
            if result.refreshed:
                log.debug(
                    "refreshed %s: %s, %d customers, %.0f ms", account,
                    "incremental" if result.incremental else "whole", result.customers,
                    result.seconds * 1000,
                )  # fmt: skip
                self.last = result
                if self._on_refresh is not None:
                    self._on_refresh(result)
            done.append(result)
        return done
