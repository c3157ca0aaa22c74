"""The metrics job: what it computes per customer and segment, dirty days, the CLI."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from jobs.metrics.refresh import refresh
from service.ledger.models import ChangedDay, SubscriptionState
from service.ledger.repository import LedgerRepository
from service.metrics.models import (
    MetricsCohort,
    MetricsDaily,
    MetricsPeriod,
    MetricsRefresh,
    MetricsSegment,
)
from service.settings import get_settings
from tests.conftest import Database
from tests.metrics.scenario import TODAY, Step, add_series, add_subscription, d, seed_scenario


def daily(session: Session, account: str = "") -> dict[date, MetricsDaily]:
    rows = session.scalars(select(MetricsDaily).where(MetricsDaily.account == account))
    return {r.day: r for r in rows}


def test_customer_level_flips_across_currencies(db_session: Session):
    # A customer moving from USD to EUR on one day stays a customer: no churn, no new.
    add_series(db_session, "mover", [Step(d(1, 1), 1000), Step(d(2, 1), 0)])
    add_series(db_session, "mover", [Step(d(2, 1), 900, rate="1.1")], currency="eur")
    db_session.flush()
    refresh(db_session, today=TODAY)
    days = daily(db_session)
    assert (days[d(1, 1)].new_customers, days[d(1, 1)].new_mrr) == (1, 1000)
    feb = days[d(2, 1)]
    # The ledger's own rows: a USD churn of 1000 and an EUR new of 990 (reporting).
    assert (feb.churned_mrr, feb.new_mrr) == (-1000, 990)
    assert (feb.new_customers, feb.churned_customers, feb.reactivated_customers) == (0, 0, 0)


def test_segment_is_the_primary_subscription(db_session: Session):
    add_series(db_session, "two", [Step(d(1, 1), 6000)])
    add_subscription(db_session, "two", plan="small", interval="month", mrr=1000)
    big = SubscriptionState(
        account="", subscription_id="sub_two_big", customer_id="two", status="active",
        currency="usd", mrr=5000, plan="big", billing_interval="year",
        cancel_at_period_end=False, started_at=2, ended_at=None, last_event_id="e",
        metadata_={"b": "2", "a": "1"},
    )  # fmt: skip
    db_session.add(big)
    db_session.flush()
    refresh(db_session, today=TODAY)
    [segment] = db_session.scalars(select(MetricsSegment)).all()
    assert (segment.plan, segment.billing_interval, segment.currency) == ("big", "year", "usd")
    assert (segment.metadata_, segment.customers) == ({"a": "1", "b": "2"}, 1)


def test_dirty_days_drive_the_refresh(db_session: Session):
    seed_scenario(db_session)
    assert refresh(db_session, today=TODAY).accounts == [""]  # never computed
    assert refresh(db_session, today=TODAY).accounts == []  # nothing changed since
    add_series(db_session, "late", [Step(d(4, 29), 1000)])
    feed = LedgerRepository(db_session)  # as the projector marks the days it rewrote
    feed.mark_changed("", [d(4, 29), d(4, 29)])
    feed.mark_changed("acct_gone", [d(1, 1)])  # an account whose rows were removed
    assert refresh(db_session, today=TODAY).accounts == ["", "acct_gone"]
    assert db_session.scalar(select(func.count()).select_from(ChangedDay)) == 0
    assert daily(db_session)[d(4, 29)].new_mrr == 1000
    gone = db_session.get(MetricsRefresh, "acct_gone")
    assert gone is not None and gone.ledger_rows == 0


def test_refresh_replaces_rather_than_adds(db_session: Session):
    seed_scenario(db_session)
    refresh(db_session, today=TODAY)

    def snapshot() -> list:
        return [
            sorted(
                tuple(getattr(r, c.key) for c in t.__table__.columns)
                for r in db_session.scalars(select(t))
            )
            for t in (MetricsDaily, MetricsPeriod, MetricsCohort, MetricsSegment)
        ]

    first = snapshot()
    refresh(db_session, full=True, today=TODAY)
    assert snapshot() == first


def test_periods_hold_turnover_per_customer(db_session: Session):
    seed_scenario(db_session)
    refresh(db_session, today=TODAY)
    rows = db_session.scalars(select(MetricsPeriod).where(MetricsPeriod.interval == "month")).all()
    by_month: dict[date, list[int]] = {}
    for r in rows:
        total = by_month.setdefault(r.period_start, [0, 0])
        total[0] += r.customers_lost
        total[1] += r.customers_gained
    # Jan: 5 gained (c7 came and went: neither). Feb: c2 lost; c5 c6 gained (c9 churned
    # and came back: neither). Mar: c5 lost, c8 gained. Apr: c4 lost, c5 c10 gained.
    assert by_month == {
        d(1, 1): [0, 5], d(2, 1): [1, 2], d(3, 1): [1, 1], d(4, 1): [1, 2],
    }  # fmt: skip


def test_jobs_run_command(fresh_database: Database, monkeypatch: pytest.MonkeyPatch):
    from jobs.metrics.cli import app

    with Session(fresh_database.engine) as session:
        seed_scenario(session)
        session.commit()
    monkeypatch.setenv("DATABASE_URL", fresh_database.url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["run", "--today", "2025-04-30"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "refreshed 1 account(s), 22 ledger rows" in result.output
    with Session(fresh_database.engine) as session:
        refreshed = session.get(MetricsRefresh, "")
        assert refreshed is not None and refreshed.through == date(2025, 4, 30)


class TestPeriodTable:
    """metrics_periods: each period's flows, customer-days and turnover per segment."""

    @staticmethod
    def rows(session: Session, interval: str) -> list[MetricsPeriod]:
        stmt = select(MetricsPeriod).where(MetricsPeriod.interval == interval)
        return list(session.scalars(stmt.order_by(MetricsPeriod.period_start)))

    def test_flows_are_the_days_summed(self, db_session: Session):
        seed_scenario(db_session)
        refresh(db_session, today=TODAY)
        days = db_session.scalars(select(MetricsDaily)).all()
        for interval in ("week", "month", "quarter", "year"):
            periods = self.rows(db_session, interval)
            for column in ("new_mrr", "churned_mrr", "new_customers", "expansions"):
                total = sum(getattr(r, column) for r in periods)
                assert total == sum(getattr(r, column) for r in days), (interval, column)

    def test_customer_days_carry_through_periods_without_rows(self, db_session: Session):
        # "one" is at risk from the start of 11 January (MRR > 0 after the 10th) on,
        # "two" from 2 to 11 February; nothing happens in March. `through` is 15 April.
        add_series(db_session, "one", [Step(d(1, 10), 1000)])
        add_series(db_session, "two", [Step(d(2, 1), 1000), Step(d(2, 11), 0)])
        refresh(db_session, today=d(4, 15))
        months = {r.period_start: r for r in self.rows(db_session, "month")}
        assert sorted(months) == [d(1, 1), d(2, 1), d(3, 1), d(4, 1)]
        assert [months[m].customer_days for m in sorted(months)] == [21, 28 + 10, 31, 15]
        assert (months[d(3, 1)].new_mrr, months[d(3, 1)].customers_lost) == (0, 0)
        [year] = self.rows(db_session, "year")
        assert year.customer_days == 21 + 28 + 10 + 31 + 15

    def test_no_rows_for_segments_without_customers_or_flows(self, db_session: Session):
        add_series(db_session, "gone", [Step(d(1, 10), 1000), Step(d(1, 20), 0)])
        refresh(db_session, today=d(4, 30))
        months = self.rows(db_session, "month")
        assert [(r.period_start, r.customer_days) for r in months] == [(d(1, 1), 10)]
        assert (months[0].customers_gained, months[0].customers_lost) == (0, 0)
