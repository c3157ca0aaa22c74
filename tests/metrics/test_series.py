"""Period values: from the daily flows (`walk`) and from the per-period rows (`chain`)."""

from __future__ import annotations

from collections import namedtuple
from datetime import date
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from jobs.metrics.refresh import refresh
from service.kit import periods as P
from service.metrics.repository import DAILY_SUMS, PERIOD_SUMS, MetricsRepository
from service.metrics.series import (
    PeriodValues,
    as_float,
    chain,
    div_half_up,
    rate,
    ratio,
    round_half_up,
    walk,
)
from tests.metrics.scenario import TODAY, seed_scenario


def _plain(values: list[PeriodValues]) -> list[tuple]:
    return [
        (v.start, v.segment, v.mrr_start, v.mrr_end, v.customers_start, v.customers_end,
         v.customer_days, v.flows)
        for v in values
    ]  # fmt: skip


class TestChain:
    @pytest.mark.parametrize("interval", ["week", "month", "quarter", "year"])
    @pytest.mark.parametrize("by_plan", [False, True])
    def test_same_values_as_walking_the_days(
        self, db_session: Session, interval: str, by_plan: bool
    ):
        seed_scenario(db_session)
        refresh(db_session, today=TODAY)
        repo = MetricsRepository(db_session)
        segments = repo.segments("", "usd")
        labels = {s.segment: s.plan for s in segments} if by_plan else None
        names = sorted({s.plan for s in segments}) if by_plan else [None]
        # From before the first ledger day (an opening balance of 0) and from inside the
        # history (a real opening balance), to past `through` (no exposure there).
        for first in (date(2024, 10, 1), date(2025, 3, 1)):
            periods = P.periods(first, date(2025, 9, 1), P.Interval(interval), TODAY)
            start, end = periods[0][0], periods[-1][1]
            by_day = walk(repo.daily("", "usd", None, start, end, labels), names, periods, TODAY)
            by_period = chain(
                repo.periods("", "usd", None, interval, start, end, labels), names, periods
            )
            assert _plain(by_period[0]) == _plain(by_day[0])
            assert by_period[1] == by_day[1]
            assert any(v.customer_days for v in by_period[0])

    def test_missing_periods_carry_the_balances(self):
        opening = _row(period_start=None, new_mrr=700, new_customers=2)
        march = _row(period_start=date(2025, 3, 1), churned_mrr=-300, churned_customers=1,
                     customer_days=40, customers_lost=1)  # fmt: skip
        rows = [opening, march]
        months = [(date(2025, m, 1), date(2025, m + 1, 1)) for m in (2, 3, 4)]
        values, unconverted = chain(rows, [None], months)
        assert [(v.mrr_start, v.mrr_end) for v in values] == [(700, 700), (700, 400), (400, 400)]
        assert [v.customers_end for v in values] == [2, 1, 1]
        assert [(v.customer_days, v.customers_lost) for v in values] == [(0, 0), (40, 1), (0, 0)]
        assert unconverted == 0


Row = namedtuple("Row", ("label", "period_start", *DAILY_SUMS, *PERIOD_SUMS))  # type: ignore[misc]


def _row(**values: object) -> tuple:
    """A row as MetricsRepository.periods gives it, label NULL."""
    return Row(**{f: values.get(f, None if f == "label" else 0) for f in Row._fields})


class TestRate:
    @given(st.integers(-(10**15), 10**15), st.integers(-(10**12), 10**12))
    def test_the_float_of_the_exact_ratio(self, numerator: int, denominator: int):
        assert rate(numerator, denominator) == as_float(ratio(numerator, denominator))

    def test_zero_or_negative_denominator_is_null(self):
        assert (rate(1, 0), rate(1, -5), rate(0, 3)) == (None, None, 0.0)


class TestDivHalfUp:
    @given(st.integers(-(10**15), 10**15), st.integers(1, 10**12))
    def test_rounds_like_the_fraction(self, numerator: int, denominator: int):
        expected = round_half_up(Fraction(numerator, denominator))
        assert div_half_up(numerator, denominator) == expected

    def test_halves_go_away_from_zero(self):
        assert [div_half_up(n, 2) for n in (5, -5, 3, -3, 4)] == [3, -3, 2, -2, 2]
