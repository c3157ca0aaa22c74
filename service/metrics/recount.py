"""What a few customers add to the metric tables, in plain Python: the incremental
refresh's arithmetic (design §10). `service.metrics.compute` computes whole accounts with
pandas, whose fixed cost per call (~0.5 s here, hundreds of small frame operations) is
what a refresh after one event cannot afford; a customer's contribution is a walk over
its few ledger rows.

The rules are compute's, customer by customer, and must stay the same: every table of
compute is a sum over customers of exactly what `Contributions.add` adds for one
(tests/metrics/test_refresh.py checks incremental == whole for any sequence of changes).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Protocol

from service.metrics.repository import DAILY_SUMS, PERIOD_VALUES, SUMMED

INTERVALS = ("week", "month", "quarter", "year")
FLOW_OF = {
    "new": "new_mrr",
    "expansion": "expansion_mrr",
    "contraction": "contraction_mrr",
    "churn": "churned_mrr",
    "reactivation": "reactivation_mrr",
}
FLIP_COUNT = {
    "new": "new_customers",
    "reactivation": "reactivated_customers",
    "churn": "churned_customers",
}
_DAILY_INDEX = {name: n for n, name in enumerate(DAILY_SUMS)}
_PERIOD_INDEX = {name: n for n, name in enumerate(PERIOD_VALUES)}


@dataclass(frozen=True, slots=True)
class Row:
    """A ledger row as the metrics read it (`MetricsStore.ledger_rows`)."""

    customer_id: str
    currency: str
    day: date
    movement: str
    from_mrr: int
    to_mrr: int
    delta_reporting: int | None
    reporting_currency: str
    churn_reason: str | None
    churn_feedback: str | None


@dataclass(frozen=True, slots=True)
class State:
    customer_id: str
    subscription_id: str
    sub_currency: str | None
    mrr: int
    plan: str | None
    billing_interval: str | None
    started_at: int | None
    ended_at: int | None
    metadata: str | None


def canonical(text: str | None) -> str:
    return json.dumps(json.loads(text) if text else {}, sort_keys=True, separators=(",", ":"))


def segment_key(plan: Any, interval: Any, currency: Any, metadata: str) -> str:
    """The segment id of these attributes (metadata as canonical JSON); compute's too."""
    raw = json.dumps([plan, interval, currency, metadata], default=str)
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def segment_of(rows: Sequence[Row], states: Sequence[State]) -> tuple[str, dict[str, Any]]:
    """A customer's segment and its attributes: its primary subscription (highest MRR,
    then latest, then lowest id), else its latest ledger currency alone."""
    latest = rows[-1].currency
    primary = min(states, key=primacy, default=None)
    if primary is None:
        plan = interval = None
        currency, metadata = latest, canonical(None)
    else:
        plan, interval = primary.plan, primary.billing_interval
        currency = primary.sub_currency if primary.sub_currency is not None else latest
        metadata = canonical(primary.metadata)
    attrs = {
        "plan": plan,
        "billing_interval": interval,
        "currency": currency,
        "metadata_": json.loads(metadata),
    }
    return segment_key(plan, interval, currency, metadata), attrs


class Ranked(Protocol):
    """What the primary-subscription rule reads: a `State`, or a ledger `SubscriptionState`."""

    @property
    def mrr(self) -> int: ...
    @property
    def started_at(self) -> int | None: ...
    @property
    def ended_at(self) -> int | None: ...
    @property
    def subscription_id(self) -> str: ...


def primacy(state: Ranked) -> tuple[int, int, str]:
    """The sort key whose minimum is a customer's primary subscription (compute ranks
    the same way, vectorized)."""
    recency = state.ended_at if state.ended_at is not None else state.started_at or 0
    return -state.mrr, -recency, state.subscription_id


def _zeros(size: int) -> Callable[[], list[int]]:
    return lambda: [0] * size


def period_start(day: date, interval: str) -> date:
    if interval == "week":
        return day - timedelta(days=day.weekday())
    if interval == "month":
        return day.replace(day=1)
    if interval == "quarter":
        return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    return date(day.year, 1, 1)


def next_period(start: date, interval: str) -> date:
    if interval == "week":
        return start + timedelta(days=7)
    months = {"month": 1, "quarter": 3, "year": 12}[interval]
    index = start.year * 12 + start.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _month_index(day: date) -> int:
    return day.year * 12 + day.month - 1


class Contributions:
    """Per table of `Tables` (names of `SUMMED`), key → summed values, over the customers
    added with sign +1 minus those added with sign −1."""

    def __init__(self, through: date) -> None:
        self.through = through
        self.horizon = through + timedelta(days=1)
        self.spans: Counter[tuple[str, date, date]] = Counter()
        self.sums: dict[str, defaultdict[tuple, list[int]]] = {
            name: defaultdict(_zeros(len(values))) for name, (_, _, values) in SUMMED.items()
        }

    def changes(self) -> dict[str, dict[tuple, list[int]]]:
        """The non-zero sums."""
        self._expose()
        return {name: {k: v for k, v in sums.items() if any(v)} for name, sums in self.sums.items()}

    def add(self, rows: Sequence[Row], segment: str, sign: int) -> None:
        """One customer's rows of one reporting currency (sorted by day, currency)."""
        if not rows:
            return
        rows = _leave_out_unconverted(rows)
        self.sums["segments"][(segment,)][0] += sign
        days, flips = _days(rows)
        daily, periods = self.sums["daily"], self.sums["periods"]
        offset = _PERIOD_INDEX[DAILY_SUMS[0]]
        for day, values in days.items():
            _add(daily[(segment, day)], values, sign)
            for interval in INTERVALS:
                target = periods[(segment, interval, period_start(day, interval))]
                _add(target, values, sign, offset)
        for interval in INTERVALS:
            self._turnover(flips, segment, interval, sign)
        self._exposure(flips, segment, sign)
        self._churn(rows, segment, sign)
        self._cohorts(rows, flips, segment, sign)

    def _exposure(self, flips: Sequence[tuple[date, str]], segment: str, sign: int) -> None:
        """Customer-days: the days the customer is active at the start of, from the day
        after each activation to the day of the churn that ends it, up to `through`.
        Gathered as spans and spread over periods once per distinct span (`_expose`):
        the customers of one round mostly share theirs (all new today, say)."""
        opened = None
        for day, kind in flips:
            if kind == "churn":
                self.spans[(segment, opened, day + timedelta(days=1))] += sign
                opened = None
            else:
                opened = day + timedelta(days=1)
        if opened is not None:
            self.spans[(segment, opened, self.horizon)] += sign

    def _expose(self) -> None:
        periods = self.sums["periods"]
        index = _PERIOD_INDEX["customer_days"]
        for (segment, first, until), count in self.spans.items():
            end = min(until, self.horizon)
            if not count or first >= end:
                continue
            for interval in INTERVALS:
                start = period_start(first, interval)
                while start < end:
                    stop = next_period(start, interval)
                    overlap = (min(stop, end) - max(start, first)).days
                    if overlap > 0:
                        periods[(segment, interval, start)][index] += count * overlap
                    start = stop
        self.spans.clear()

    def _turnover(
        self, flips: Sequence[tuple[date, str]], segment: str, interval: str, sign: int
    ) -> None:
        periods = self.sums["periods"]
        ends: dict[date, list[str]] = {}
        for day, kind in flips:
            p = ends.setdefault(period_start(day, interval), [kind, kind])
            p[1] = kind
        for start, (first, last) in ends.items():
            target = periods[(segment, interval, start)]
            if first == "churn" and last == "churn":
                target[_PERIOD_INDEX["customers_lost"]] += sign
            elif first != "churn" and last != "churn":
                target[_PERIOD_INDEX["customers_gained"]] += sign

    def _churn(self, rows: Sequence[Row], segment: str, sign: int) -> None:
        churn = self.sums["churn"]
        for row in rows:
            if row.movement == "churn":
                key = (segment, row.day, row.churn_reason or "unknown", row.churn_feedback or "")
                values = churn[key]
                values[0] += sign
                values[1] += sign * (row.delta_reporting or 0)

    def _cohorts(
        self, rows: Sequence[Row], flips: Sequence[tuple[date, str]], segment: str, sign: int
    ) -> None:
        first = next((day for day, kind in flips if kind == "new"), None)
        if first is None:
            return
        cohort = _month_index(first)
        initial = sum(r.delta_reporting or 0 for r in rows if r.day == first)
        mrr_steps: dict[int, int] = defaultdict(int)
        for r in rows:
            mrr_steps[_month_index(r.day)] += r.delta_reporting or 0
        active_at: dict[int, bool] = {}  # month → active after its last flip
        for day, kind in flips:
            active_at[_month_index(day)] = kind != "churn"
        cohort_month = date(cohort // 12, cohort % 12 + 1, 1)
        cohorts = self.sums["cohorts"]
        active, mrr = False, 0
        for month in range(cohort, _month_index(self.through) + 1):
            active = active_at.get(month, active)
            mrr += mrr_steps.get(month, 0)
            values = cohorts[(segment, cohort_month, month - cohort)]
            values[0] += sign
            values[1] += sign * initial
            values[2] += sign * int(active)
            values[3] += sign * mrr


def _add(target: list[int], values: Sequence[int], sign: int, offset: int = 0) -> None:
    for n, value in enumerate(values):
        if value:
            target[offset + n] += sign * value


def _days(rows: Sequence[Row]) -> tuple[dict[date, list[int]], list[tuple[date, str]]]:
    """compute's `customer_days` and `daily_flows` for one customer: its flows per day
    (DAILY_SUMS), and its customer-level flips (day, kind) in day order."""
    days: dict[date, list[int]] = {}
    active_series: dict[str, bool] = {}
    count = 0  # series with MRR > 0
    flips: list[tuple[date, str]] = []
    before = started = False
    for n, row in enumerate(rows):
        values = days.setdefault(row.day, [0] * len(DAILY_SUMS))
        flow = FLOW_OF.get(row.movement)
        if flow is not None:
            values[_DAILY_INDEX[flow]] += row.delta_reporting or 0
        if row.movement == "expansion":
            values[_DAILY_INDEX["expansions"]] += 1
        elif row.movement == "contraction":
            values[_DAILY_INDEX["contractions"]] += 1
        if row.delta_reporting is None:
            values[_DAILY_INDEX["unconverted_movements"]] += 1
        active = row.to_mrr > 0
        count += int(active) - int(active_series.get(row.currency, False))
        active_series[row.currency] = active
        if n + 1 < len(rows) and rows[n + 1].day == row.day:
            continue  # a day flips on its net change, after its last row
        after = count > 0
        kind = ""
        if after and not before:
            kind = "reactivation" if started else "new"
            started = True
        elif before and not after:
            kind = "churn"
        if kind:
            flips.append((row.day, kind))
            values[_DAILY_INDEX[FLIP_COUNT[kind]]] += 1
        before = after
    return days, flips


def _leave_out_unconverted(rows: Sequence[Row]) -> list[Row]:
    """compute's `leave_out_unconverted` for one customer: a (currency) series with any
    row lacking a reporting amount moves nothing (its rows still count as unconverted
    and place the customer in its segment)."""
    gaps = {r.currency for r in rows if r.delta_reporting is None}
    if not gaps:
        return list(rows)
    out = []
    for r in rows:
        if r.currency in gaps:
            r = Row(r.customer_id, r.currency, r.day, "", 0, 0, None, r.reporting_currency,
                    r.churn_reason, r.churn_feedback)  # fmt: skip
        out.append(r)
    return out


def by_customer(rows: Iterable[Any]) -> dict[tuple[str, str], list[Any]]:
    """Rows (sorted by customer, day, currency) per (customer, reporting currency)."""
    out: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in rows:
        out[(row.customer_id, row.reporting_currency)].append(row)
    return out
