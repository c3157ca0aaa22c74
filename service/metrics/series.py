"""Period values from the precomputed flows: per day (`walk`, one pass over the days per
segment) or per period (`chain`), per segment.

MRR and customers at a boundary are the opening balance plus every flow before it, so
`mrr_end = mrr_start + movements` holds by construction and periods chain exactly.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from fractions import Fraction
from typing import Any

from service.metrics.repository import DAILY_SUMS

MRR_FLOWS = ("new_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr", "reactivation_mrr")
Label = str | None


@dataclass
class PeriodValues:
    start: date
    end: date
    segment: Label
    mrr_start: int = 0
    mrr_end: int = 0
    customers_start: int = 0
    customers_end: int = 0
    customer_days: int = 0
    customers_lost: int = 0
    customers_gained: int = 0
    flows: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DAILY_SUMS, 0))


def _net_customers(flows: dict[str, int]) -> int:
    return flows["new_customers"] + flows["reactivated_customers"] - flows["churned_customers"]


def _add(into: dict[str, int], row: Any) -> None:
    # Positional: rows are (label, day or period, *DAILY_SUMS, ...).
    for name, value in zip(DAILY_SUMS, row[2 : 2 + len(DAILY_SUMS)], strict=True):
        if value:
            into[name] += int(value)


def walk(
    rows: Sequence[Any],
    labels: Sequence[Label],
    periods: Sequence[tuple[date, date]],
    through: date | None,
) -> tuple[list[PeriodValues], int]:
    """Values per (period, label), ordered by period then label; and the unconverted rows
    before the last period's end. `rows` come from MetricsRepository.daily."""
    opening: dict[Label, dict[str, int]] = defaultdict(lambda: dict.fromkeys(DAILY_SUMS, 0))
    days: dict[Label, dict[date, dict[str, int]]] = defaultdict(dict)
    for row in rows:
        label = row.label
        if row.day is None:
            _add(opening[label], row)
        else:
            _add(days[label].setdefault(row.day, dict.fromkeys(DAILY_SUMS, 0)), row)

    # Customer-days stop at `through`: later days have not happened yet.
    horizon = through + timedelta(days=1) if through else periods[0][0]
    out: dict[Label, list[PeriodValues]] = {}
    unconverted = 0
    for label in labels:
        mrr = sum(opening[label][f] for f in MRR_FLOWS)
        customers = _net_customers(opening[label])
        unconverted += opening[label]["unconverted_movements"]
        day_flows = days[label]
        ordered = sorted(day_flows)
        values = []
        for start, end in periods:
            p = PeriodValues(start, end, label, mrr_start=mrr, customers_start=customers)
            lo, hi = bisect.bisect_left(ordered, start), bisect.bisect_left(ordered, end)
            cursor = start
            for day in ordered[lo:hi]:
                flows = day_flows[day]
                # Customers active at the start of `cursor`..`day` are the current count.
                p.customer_days += customers * _days(cursor, day + timedelta(days=1), horizon)
                cursor = day + timedelta(days=1)
                for name in DAILY_SUMS:
                    p.flows[name] += flows[name]
                mrr += sum(flows[f] for f in MRR_FLOWS)
                customers += _net_customers(flows)
            p.customer_days += customers * _days(cursor, end, horizon)
            p.mrr_end, p.customers_end = mrr, customers
            unconverted += p.flows["unconverted_movements"]
            values.append(p)
        out[label] = values
    ordered_values = [out[label][i] for i in range(len(periods)) for label in labels]
    return ordered_values, unconverted


def chain(
    rows: Sequence[Any], labels: Sequence[Label], periods: Sequence[tuple[date, date]]
) -> tuple[list[PeriodValues], int]:
    """What `walk` gives, from MetricsRepository.periods: the job summed the flows and
    counted customer-days and turnover per period already, so only the balances at the
    boundaries are left to chain. Every period must be one of the table's interval."""
    opening: dict[Label, dict[str, int]] = defaultdict(lambda: dict.fromkeys(DAILY_SUMS, 0))
    found: dict[tuple[Label, date], Any] = {}
    for row in rows:
        if row.period_start is None:
            _add(opening[row.label], row)
        else:
            found[(row.label, row.period_start)] = row
    out: dict[Label, list[PeriodValues]] = {}
    unconverted = 0
    for label in labels:
        mrr = sum(opening[label][f] for f in MRR_FLOWS)
        customers = _net_customers(opening[label])
        unconverted += opening[label]["unconverted_movements"]
        values = []
        for start, end in periods:
            p = PeriodValues(start, end, label, mrr_start=mrr, customers_start=customers)
            row = found.get((label, start))
            if row is not None:
                _add(p.flows, row)
                p.customer_days = int(row.customer_days or 0)
                p.customers_lost = int(row.customers_lost or 0)
                p.customers_gained = int(row.customers_gained or 0)
                mrr += sum(p.flows[f] for f in MRR_FLOWS)
                customers += _net_customers(p.flows)
            p.mrr_end, p.customers_end = mrr, customers
            unconverted += p.flows["unconverted_movements"]
            values.append(p)
        out[label] = values
    return [out[label][i] for i in range(len(periods)) for label in labels], unconverted


def _days(first: date, end: date, horizon: date) -> int:
    return max(0, (min(end, horizon) - first).days)


# --- ratios -------------------------------------------------------------------------------


def ratio(numerator: int | Fraction, denominator: int | Fraction) -> Fraction | None:
    """None for a zero (or, for MRR after FX drift, negative) denominator: never inf."""
    return None if denominator <= 0 else Fraction(numerator) / Fraction(denominator)


def rate(numerator: int, denominator: int) -> float | None:
    """`as_float(ratio(n, d))` for integers, without the fractions: int / int is correctly
    rounded, as is float(Fraction), so the two are the same float."""
    return None if denominator <= 0 else round(numerator / denominator, 8)


def as_float(value: Fraction | None) -> float | None:
    # Rates are not money: a JSON number rounded to 8 decimals is what BI tools expect.
    return None if value is None else round(float(value), 8)


def div_half_up(numerator: int, denominator: int) -> int:
    """`round_half_up(Fraction(n, d))` in integers, for d > 0."""
    magnitude = (2 * abs(numerator) + denominator) // (2 * denominator)
    return magnitude if numerator >= 0 else -magnitude


def round_half_up(value: Fraction) -> int:
    magnitude = int(abs(value) + Fraction(1, 2))
    return magnitude if value >= 0 else -magnitude
