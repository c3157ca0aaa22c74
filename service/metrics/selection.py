"""A metrics query resolved against the precomputed tables: reporting currency, the
segments its filters select, its periods and the sums per period."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from service.kit import periods as P
from service.kit.errors import invalid_parameter as invalid
from service.ledger.schemas import Money
from service.metrics.repository import MetricsRepository
from service.metrics.schemas import SegmentBy
from service.metrics.series import PeriodValues, chain, walk


class SegmentAttributes(Protocol):
    """What the segment filters look at: a `MetricsSegment`, or one customer's."""

    plan: str | None
    billing_interval: str | None
    currency: str | None
    metadata_: dict[str, Any] | None


@dataclass(frozen=True)
class MetricsQuery:
    account: str
    currency: str | None  # None: the configured reporting currency
    default_currency: str
    start: date | None
    end: date | None
    interval: P.Interval
    today: date
    plan: str | None = None
    billing_interval: str | None = None
    currency_code: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    segment_by: SegmentBy | None = None


@dataclass(frozen=True)
class ChurnOptions:
    good_below: float = 0.05
    high_above: float = 0.10
    gross_margin: float | None = None


class Selection:
    """A query resolved against the precomputed tables: currency, segments, periods."""

    def __init__(self, session: Session, q: MetricsQuery, interval: P.Interval) -> None:
        self.repo = MetricsRepository(session)
        self.q = q
        self.interval = interval
        self.currency = self._currency()
        requested = P.periods(q.start, q.end, interval, q.today)
        self._requested = requested[0][0], requested[-1][1]
        # Periods that start after today are not known yet: not answered as if they were
        # (MRR carried forward into the future would read as a forecast).
        self.periods = [p for p in requested if p[0] <= q.today]
        # segment -> label of the chosen segments; None: every segment, one label.
        self._label: dict[str, str | None] | None = None
        self.segment_keys: list[str] | None = None
        self.labels: list[str | None] = [None]
        attr = q.segment_by.value if q.segment_by else None
        filters = (q.plan, q.billing_interval, q.currency_code)
        # Unfiltered and unsegmented (the usual dashboard query), the segments themselves
        # are not needed: a round trip saved.
        if attr or q.metadata or any(f is not None for f in filters):
            segments = self.repo.segments(q.account, self.currency)
            chosen = [s for s in segments if self.matches(s)]
            if len(chosen) != len(segments):
                self.segment_keys = [s.segment for s in chosen]
            self._label = {s.segment: getattr(s, attr) if attr else None for s in chosen}
            if attr:
                found = set(self._label.values())
                self.labels = sorted(found, key=lambda v: (v is not None, v or ""))
        # segment_by=plan answers the price id as `segment` (stable) and its name beside.
        self._names: dict[str, str] = {}
        if q.segment_by is SegmentBy.plan:
            plans = [label for label in self.labels if label is not None]
            self._names = self.repo.plan_names(q.account, plans) if plans else {}
        self.fresh = self.repo.freshness(q.account)

    def _currency(self) -> str:
        default = self.q.default_currency.lower()
        wanted = (self.q.currency or default).lower()
        if wanted != default and wanted not in self.repo.reporting_currencies(self.q.account):
            raise invalid("currency", f"no metrics in {wanted}: the ledger reports in {default}")
        return wanted

    def matches(self, s: SegmentAttributes) -> bool:
        """Whether a segment (or a customer's segment attributes) passes the filters."""
        q = self.q
        return (
            (q.plan is None or s.plan == q.plan)
            and (q.billing_interval is None or s.billing_interval == q.billing_interval)
            and (q.currency_code is None or (s.currency or "") == q.currency_code.lower())
            and all(_text((s.metadata_ or {}).get(k)) == v for k, v in q.metadata.items())
        )

    def includes(self, segment: str) -> bool:
        return self._label is None or segment in self._label

    def label(self, segment: str) -> str | None:
        return None if self._label is None else self._label.get(segment)

    def segment_label(self, label: str | None) -> str | None:
        """What a person reads for a row's `segment`: a plan's product name and price
        nickname (its id while no payload named it), any other segment's value itself."""
        return None if label is None else self._names.get(label, label)

    @property
    def bounds(self) -> tuple[date, date]:
        """What is read: the periods answered (the requested ones when all are future)."""
        if not self.periods:
            return self._requested
        return self.periods[0][0], self.periods[-1][1]

    def values(self) -> tuple[list[PeriodValues], int]:
        """Values per period and label, customer turnover included."""
        if not self.periods:
            return [], 0
        start, end = self.bounds
        # Segments are mapped to labels in SQL: one row per label and day (or period).
        labels = self._label if self.q.segment_by else None
        args = (self.q.account, self.currency, self.segment_keys)
        if self.interval is not P.Interval.day:
            rows = self.repo.periods(*args, self.interval.value, start, end, labels)
            return chain(rows, self.labels, self.periods)
        rows = self.repo.daily(*args, start, end, labels)
        values, unconverted = walk(rows, self.labels, self.periods, self.fresh.through)
        # At most one customer-level flip per customer and day: daily counts are exact.
        for p in values:
            p.customers_lost = p.flows["churned_customers"]
            p.customers_gained = p.flows["new_customers"] + p.flows["reactivated_customers"]
        return values, unconverted

    def money(self, amount: int) -> Money:
        # Not model_construct: pydantic-core's validation is faster than its Python loop.
        return Money.of(amount, self.currency)

    def header(self, unconverted: int) -> dict[str, Any]:
        f = self.fresh
        return {
            "account": self.q.account,
            "currency": self.currency,
            "start": self.bounds[0],
            "end": self.bounds[1],
            "segment_by": self.q.segment_by,
            "as_of": datetime.fromtimestamp(f.as_of, UTC) if f.as_of else None,
            "refreshed_at": f.refreshed_at,
            "through": f.through,
            "stale": f.stale,
            "stale_seconds": f.stale_seconds(time.time_ns() // 1_000_000),
            "unconverted_movements": unconverted,
            "unconverted_currencies": self.repo.unconverted_currencies(
                self.q.account, self.currency, self.bounds[1]
            ),
        }


def _text(value: Any) -> str | None:
    """Stripe metadata values are strings; anything else compares by its text."""
    return None if value is None else str(value)
