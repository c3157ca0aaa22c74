"""The live refresh (service/metrics/refresh.py): what one account's refresh does with the
marks, the debounced refresher, concurrent refreshes, and live == full for any order."""

from __future__ import annotations

import itertools
import random
import statistics
import threading
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from service.db import make_sessionmaker
from service.kit.gate import WriteGate
from service.ledger.models import ChangedDay, MrrMovement, SubscriptionState
from service.ledger.repository import LedgerRepository
from service.metrics.models import MetricsCounted, MetricsRefresh, MetricsSegment
from service.metrics.refresh import MetricsRefresher, refresh, refresh_account
from service.metrics.repository import TABLES, MetricsRepository
from service.projector.service import project_pending
from service.settings import LedgerOptions
from service.webhooks.schemas import parse_event
from service.webhooks.service import store_event
from sim.simulate import event_bytes, simulate
from tests.conftest import Database, make_settings
from tests.metrics.scenario import (
    TODAY,
    Step,
    add_series,
    add_subscription,
    d,
    seed_scenario,
)

OPTIONS = LedgerOptions()
_accounts = itertools.count()


def tables(session: Session, account: str) -> list[list[tuple]]:
    """Every metric table's rows of the account, comparable across refreshes."""
    out = []
    for table in TABLES:
        columns = [c for c in table.__table__.columns]
        rows = session.execute(select(*columns).where(table.account == account)).all()
        out.append(sorted(tuple(str(v) for v in row) for row in rows))
    return out


def counted(session: Session, account: str) -> list[tuple]:
    t = MetricsCounted
    columns = [c for c in t.__table__.columns]
    rows = session.execute(select(*columns).where(t.account == account)).all()
    return sorted(tuple(str(v) for v in row) for row in rows)


def whole(session: Session, account: str, today: date) -> tuple[list, list]:
    """What a whole recomputation over the same ledger writes (tables, counted rows),
    undone afterwards."""
    nested = session.begin_nested()
    try:
        assert not refresh_account(session, account, today=today, force=True).incremental
        return tables(session, account), counted(session, account)
    finally:
        nested.rollback()


def marks(session: Session, account: str = "") -> int:
    stmt = select(func.count()).select_from(ChangedDay).where(ChangedDay.account == account)
    return session.scalar(stmt) or 0


class TestRefreshAccount:
    def test_clears_its_marks_and_then_has_nothing_to_do(self, db_session: Session):
        seed_scenario(db_session)
        LedgerRepository(db_session).mark_changed("", [], ["c1", "c2"])
        first = refresh_account(db_session, "", today=TODAY)
        assert first.refreshed and first.ledger_rows > 0
        assert marks(db_session) == 0
        assert not refresh_account(db_session, "", today=TODAY).refreshed
        # The day rolled over: the current periods grew, so it refreshes without marks.
        later = refresh_account(db_session, "", today=date(TODAY.year + 1, 1, 1))
        assert later.refreshed

    def test_stale_while_marks_wait_and_says_since_when(self, db_session: Session):
        seed_scenario(db_session)
        refresh_account(db_session, "", today=TODAY, force=True)
        repo = MetricsRepository(db_session)
        assert not repo.freshness("").stale
        assert repo.freshness("").stale_seconds(0) is None
        before = time.time_ns() // 1_000_000
        LedgerRepository(db_session).mark_changed("", [], ["c1"])
        fresh = repo.freshness("")
        assert fresh.stale and fresh.stale_since_ms is not None
        assert fresh.stale_since_ms >= before
        assert fresh.stale_seconds(fresh.stale_since_ms + 1500) == 1.5
        refresh_account(db_session, "", today=TODAY)
        assert not repo.freshness("").stale

    def test_the_job_refreshes_only_what_waits(self, db_session: Session):
        seed_scenario(db_session)
        assert refresh(db_session, today=TODAY).accounts == [""]
        assert refresh(db_session, today=TODAY).accounts == []
        add_series(db_session, "late", [Step(d(4, 29), 1000)])
        LedgerRepository(db_session).mark_changed("", [], ["late"])
        assert refresh(db_session, today=TODAY).accounts == [""]


class TestIncremental:
    """Only the marked customers are recounted, and the tables come out as a whole
    recomputation writes them."""

    def _refreshed(self, session: Session) -> None:
        seed_scenario(session)
        assert not refresh_account(session, "", today=TODAY, force=True).incremental

    def _recount(self, session: Session, *customers: str, today: date = TODAY) -> None:
        LedgerRepository(session).mark_changed("", [], list(customers))
        done = refresh_account(session, "", today=today)
        assert done.incremental and done.customers == len(customers)
        assert (tables(session, ""), counted(session, "")) == whole(session, "", today)
        assert marks(session) == 0

    def _segments(self, session: Session) -> dict[tuple, int]:
        rows = session.scalars(select(MetricsSegment).where(MetricsSegment.account == ""))
        return {(r.plan, r.billing_interval, r.currency, str(r.metadata_)): r.customers
                for r in rows}  # fmt: skip

    def test_a_never_computed_account_is_counted_from_nothing(self, db_session: Session):
        seed_scenario(db_session)
        done = refresh_account(db_session, "", today=TODAY)
        assert done.incremental and done.customers == 10 and done.ledger_rows == 22
        assert (tables(db_session, ""), counted(db_session, "")) == whole(db_session, "", TODAY)

    def test_a_new_customer(self, db_session: Session):
        self._refreshed(db_session)
        add_series(db_session, "late", [Step(d(4, 29), 1000)])
        add_subscription(db_session, "late", plan="gold", interval="month", mrr=1000)
        self._recount(db_session, "late")
        assert self._segments(db_session)[("gold", "month", "usd", "{}")] == 1
        record = db_session.get(MetricsRefresh, "")
        assert record is not None and record.ledger_rows == 23  # 22 seeded + 1

    def test_a_rewritten_history(self, db_session: Session):
        self._refreshed(db_session)
        db_session.execute(delete(MrrMovement).where(MrrMovement.customer_id == "c2"))
        add_series(db_session, "c2", [Step(d(1, 10), 7000), Step(d(3, 3), 9000)])
        self._recount(db_session, "c2")

    def test_a_customer_moving_segment_leaves_the_old_one(self, db_session: Session):
        self._refreshed(db_session)
        basic = ("basic", "month", "usd", "{}")
        assert self._segments(db_session)[basic] == 5  # c2, c5, c7, c9, c10
        db_session.execute(
            update(SubscriptionState)
            .where(SubscriptionState.customer_id == "c10")
            .values(plan="gold")
        )
        self._recount(db_session, "c10")
        after = self._segments(db_session)
        assert after[basic] == 4 and after[("gold", "month", "usd", "{}")] == 1

    def test_a_customer_gone_from_the_ledger(self, db_session: Session):
        self._refreshed(db_session)
        db_session.execute(delete(MrrMovement).where(MrrMovement.customer_id == "c3"))
        self._recount(db_session, "c3")
        record = db_session.get(MetricsRefresh, "")
        assert record is not None and record.ledger_rows == 21

    def test_fx_day_marks_recount_the_customers_with_rows_on_those_days(self, db_session: Session):
        self._refreshed(db_session)
        db_session.execute(
            update(MrrMovement)
            .where(MrrMovement.customer_id == "c6", MrrMovement.day == d(2, 10))
            .values(delta_reporting=None)
        )
        LedgerRepository(db_session).mark_changed("", [d(2, 10)])
        done = refresh_account(db_session, "", today=TODAY)
        # c6 and c9 have rows on 10 February.
        assert done.incremental and done.customers == 2
        assert (tables(db_session, ""), counted(db_session, "")) == whole(db_session, "", TODAY)

    def test_a_moved_through_recomputes_whole(self, db_session: Session):
        self._refreshed(db_session)
        add_series(db_session, "future", [Step(d(5, 3), 1000)])  # after TODAY
        LedgerRepository(db_session).mark_changed("", [], ["future"])
        assert not refresh_account(db_session, "", today=TODAY).incremental


def _recording(starts: list[float], takes_s: float, **options: Any) -> MetricsRefresher:
    """A refresher whose rounds open no session: each appends its start and takes
    `takes_s`."""

    class Recording(MetricsRefresher):
        def refresh_pending(self) -> list:
            starts.append(time.monotonic())
            time.sleep(takes_s)
            return []

    return Recording(None, poll_s=60, **options)  # type: ignore[arg-type]


class TestMetricsRefresher:
    def test_a_poke_refreshes_within_the_max_delay(self, fresh_database: Database):
        factory = make_sessionmaker(fresh_database.engine)
        with factory() as session:
            seed_scenario(session)
            session.commit()
        done = threading.Event()
        refresher = MetricsRefresher(
            factory,
            debounce_s=0.2,
            max_delay_s=1.0,
            poll_s=60,
            rest_factor=0,
            on_refresh=lambda r: done.set(),
        )
        refresher.start()
        try:
            # The first round (at start) takes the never-computed account.
            assert done.wait(10)
            done.clear()
            with factory() as session:
                add_series(session, "late", [Step(d(4, 29), 1000)])
                LedgerRepository(session).mark_changed("", [], ["late"])
                session.commit()
            poked = time.monotonic()
            # Pokes keep coming (a steady stream): the refresh still runs by max_delay.
            while not done.is_set() and time.monotonic() - poked < 5:
                refresher.poke()
                time.sleep(0.05)
            assert done.is_set()
            assert time.monotonic() - poked < 2.5
        finally:
            refresher.stop()
        with factory() as session:
            assert marks(session) == 0
            assert session.get(MetricsRefresh, "") is not None

    @pytest.mark.parametrize("busy", [False, True], ids=["quiet", "busy"])
    def test_a_busy_projector_s_poke_waits_for_the_max_delay(self, busy: bool):
        """A projector catching up under load pokes with busy: its refresh waits for
        max_delay, not for the debounce (SQLite's write lock goes to the receiver)."""
        starts: list[float] = []
        refresher = _recording(starts, 0.0, debounce_s=0.05, max_delay_s=0.8, rest_factor=0)
        refresher.start()
        try:
            deadline = time.monotonic() + 5
            while not starts and time.monotonic() < deadline:  # the round at start
                time.sleep(0.01)
            poked = time.monotonic()
            refresher.poke(busy=busy)
            while len(starts) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            refresher.stop()
        assert len(starts) == 2
        waited = starts[1] - poked
        if busy:
            assert waited >= 0.8 * 0.95, waited
        else:
            assert waited < 0.5, waited

    @pytest.mark.parametrize("configured", [None, 0.5])
    def test_rest_defaults_to_resting_only_on_sqlite(
        self, fresh_database: Database, configured: float | None
    ):
        """Resting is for SQLite's one write lock; PostgreSQL's refresh blocks no writer,
        so there a rest would only delay the next answer. A configured factor wins."""
        engine = fresh_database.engine
        settings_ = make_settings(fresh_database.url, metrics_refresh_rest_factor=configured)
        refresher = MetricsRefresher.from_settings(
            settings_, make_sessionmaker(engine), WriteGate.for_engine(engine)
        )
        assert refresher is not None
        default = 3.0 if engine.dialect.name == "sqlite" else 0.0
        assert refresher.rest_factor == (default if configured is None else configured)

    @pytest.mark.parametrize("rest_factor", [0.0, 3.0])
    def test_rounds_rest_in_proportion_to_their_length(self, rest_factor: float):
        """Pokes never stop (a steady stream of events), rounds take 0.3 s: with a rest
        factor of 3 a round starts at least 0.3 + 0.9 s after the previous one started;
        with none they follow each other as the debounce allows."""
        starts: list[float] = []
        refresher = _recording(
            starts, 0.3, debounce_s=0.01, max_delay_s=0.05, rest_factor=rest_factor
        )
        refresher.start()
        try:
            until = time.monotonic() + 4
            while time.monotonic() < until:
                refresher.poke()
                time.sleep(0.02)
        finally:
            refresher.stop()
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert len(gaps) >= 2
        if rest_factor:
            assert min(gaps) >= 1.2 * 0.95
        else:
            assert statistics.median(gaps) < 1.0

    def test_sqlite_refreshes_beside_a_busy_writer_never_fail(self, fresh_database: Database):
        """The refresh takes the write lock before reading: a writer committing between
        its read and its write cannot make it fail with "database is locked"."""
        factory = make_sessionmaker(fresh_database.engine)
        with factory() as session:
            seed_scenario(session)
            session.commit()
        stop = threading.Event()
        errors: list[BaseException] = []

        def write() -> None:
            n = 0
            while not stop.is_set():
                try:
                    with factory() as session:
                        add_series(session, f"w{n}", [Step(d(4, 1 + n % 28), 1000 + n)])
                        LedgerRepository(session).mark_changed("", [], [f"w{n}"])
                        session.commit()
                except BaseException as exc:
                    errors.append(exc)
                    return
                n += 1

        writer = threading.Thread(target=write)
        writer.start()
        try:
            for _ in range(15):
                with factory() as session:
                    refresh_account(session, "", today=TODAY)
                    session.commit()
        finally:
            stop.set()
            writer.join(10)
        assert errors == []
        with factory() as session:
            refresh_account(session, "", today=TODAY)
            session.commit()
            live = tables(session, "")
            refresh(session, full=True, today=TODAY)
            assert tables(session, "") == live


class TestConcurrentRefreshes:
    def test_postgres_serializes_them_with_an_advisory_lock(self, fresh_database: Database):
        if fresh_database.backend != "postgresql":
            pytest.skip("SQLite serializes refreshes on its write lock")
        factory = make_sessionmaker(fresh_database.engine)
        with factory() as session:
            seed_scenario(session)
            session.commit()
        with factory() as session:
            refresh(session, full=True, today=TODAY)
            session.commit()
            expected = tables(session, "")
        with factory() as first, factory() as second:
            LedgerRepository(first).mark_changed("", [], ["c1"])
            first.commit()
            assert refresh_account(first, "", today=TODAY).refreshed  # holds the lock
            finished = threading.Event()
            outcome: list = []

            def other() -> None:
                try:
                    outcome.append(refresh_account(second, "", today=TODAY, force=True))
                    second.commit()
                except BaseException as exc:
                    outcome.append(exc)
                finished.set()

            thread = threading.Thread(target=other)
            thread.start()
            # Without the lock the second would delete and insert beside the first, and
            # one of them would fail on the primary keys (or both would count twice).
            assert not finished.wait(0.5)
            first.commit()
            thread.join(10)
        assert len(outcome) == 1 and not isinstance(outcome[0], BaseException)
        assert outcome[0].refreshed
        with factory() as session:
            assert tables(session, "") == expected

    def test_two_schemas_do_not_wait_for_each_other(
        self, fresh_database: Database, database: Database
    ):
        if fresh_database.backend != "postgresql":
            pytest.skip("PostgreSQL advisory locks only")
        with Session(fresh_database.engine) as one, Session(database.engine) as two:
            refresh_account(one, "", today=TODAY, force=True)  # holds its schema's lock
            started = time.monotonic()
            refresh_account(two, "", today=TODAY, force=True)
            assert time.monotonic() - started < 5
            two.rollback()
            one.rollback()


def _deliver(
    session: Session, account: str, events: list, chunks: int, today: date, now: int
) -> int:
    """The events in `chunks` arrivals; after each, what the service does live: project,
    then refresh the account, and its tables are a whole recomputation's. Returns how
    many refreshes were incremental."""
    size = len(events) // chunks + 1
    incremental = 0
    for start in range(0, len(events), size):
        for event in events[start : start + size]:
            body = event_bytes(event)
            store_event(session, body, parse_event(body))
        while project_pending(session, OPTIONS, limit=50, now=now):
            done = refresh_account(session, account, today=today)
            incremental += done.incremental
            assert (tables(session, account), counted(session, account)) == whole(
                session, account, today
            )
    return incremental


class TestLiveEqualsFull:
    @settings(
        max_examples=12,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        seed=st.integers(0, 10_000),
        customers=st.integers(1, 12),
        months=st.integers(1, 8),
        chunks=st.integers(1, 6),
        order=st.randoms(use_true_random=False),
    )
    def test_live_refreshed_tables_equal_a_full_run(
        self, db_session: Session, seed, customers, months, chunks, order: random.Random
    ):
        account = f"acct_live_{next(_accounts)}"
        sim = simulate(customers=customers, months=months, seed=seed, account=account)
        deliveries = list(sim.events) + order.sample(sim.events, k=len(sim.events) // 10)
        order.shuffle(deliveries)
        today = datetime.fromtimestamp(sim.until, UTC).date()
        _deliver(db_session, account, deliveries, chunks, today, sim.until + 86_400)
        refresh_account(db_session, account, today=today)
        live = tables(db_session, account)
        refresh(db_session, accounts=[account], full=True, today=today)
        assert tables(db_session, account) == live
        assert marks(db_session, account) == 0


BASE = date(2025, 1, 1)
PLANS = ("basic", "pro", None)  # None: no subscription known


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, str | None, list[Step]]]:
    """One customer's ledger: series (currency, FX rate or None, steps) and a plan."""
    out = []
    for currency in draw(st.sets(st.sampled_from(["usd", "eur", "jpy"]), min_size=1, max_size=2)):
        rate = draw(st.sampled_from(["1", "1.1", "0.0067", None]))
        raw = draw(st.dictionaries(st.integers(0, 150), st.sampled_from([0, 1000, 2500, 12000]),
                                   max_size=6))  # fmt: skip
        steps, before = [], 0
        for offset, mrr in sorted(raw.items()):
            if mrr != before:
                reason = "voluntary" if offset % 2 else "involuntary"
                steps.append(Step(BASE + timedelta(days=offset), mrr, rate=rate, reason=reason))
                before = mrr
        out.append((currency, rate, steps))
    return out


class TestIncrementalEqualsWholeForAnyChanges:
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(
        rounds=st.lists(
            st.lists(
                st.tuples(st.integers(0, 7), histories(), st.sampled_from(PLANS)),
                min_size=1,
                max_size=4,
            ),
            min_size=1,
            max_size=6,
        ),
        # Within the histories too: `through` is then the newest ledger day, and a
        # history reaching past it moves it (a whole recomputation).
        today=st.sampled_from([BASE + timedelta(days=120), BASE + timedelta(days=200)]),
    )
    def test_any_sequence_of_rewrites(self, db_session: Session, rounds: list, today: date):
        """Rounds of customers whose ledger history and plan are rewritten at random (a
        projection), each followed by a refresh: the tables equal a whole recomputation
        after every one."""
        account = f"acct_incr_{next(_accounts)}"
        refresh_account(db_session, account, today=today)
        incremental = 0
        for changes in rounds:
            touched = []
            for n, history, plan in changes:
                customer = f"cus_{n}"
                touched.append(customer)
                for model in (MrrMovement, SubscriptionState):
                    db_session.execute(
                        delete(model).where(model.account == account, model.customer_id == customer)
                    )
                for currency, _, steps in history:
                    if steps:
                        add_series(db_session, customer, steps, currency=currency, account=account)
                if plan is not None:
                    add_subscription(db_session, customer, plan=plan, interval="month",
                                     currency=history[0][0], account=account)  # fmt: skip
                db_session.flush()
            LedgerRepository(db_session).mark_changed(account, [], touched)
            incremental += refresh_account(db_session, account, today=today).incremental
            assert (tables(db_session, account), counted(db_session, account)) == whole(
                db_session, account, today
            )
            assert marks(db_session, account) == 0
