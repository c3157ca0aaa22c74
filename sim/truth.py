"""What the ledger must say about a simulated account: the simulator's own MRR per UTC day.

Built from the MRR points the builder records from its state model (`sim.model`), never
from the events it emits, so comparing the service's ledger with it is an independent check.
"""

from __future__ import annotations

import json
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

from sim.model import DAY, Shape, day_start, utc_day


class TruthMovement(NamedTuple):
    customer_id: str
    day: date
    currency: str
    from_mrr: int
    to_mrr: int

    @property
    def delta(self) -> int:
        return self.to_mrr - self.from_mrr


@dataclass(frozen=True, slots=True)
class SubscriptionLine:
    """One subscription's MRR over time: `mrrs[i]` holds from `times[i]` to `times[i+1]`."""

    subscription_id: str
    customer_id: str
    currency: str
    times: tuple[int, ...]
    mrrs: tuple[int, ...]

    def at(self, ts: int) -> int:
        """MRR after every change at or before `ts`."""
        i = bisect_left(self.times, ts + 1)
        return self.mrrs[i - 1] if i else 0


class Truth:
    """True MRR of the simulated account, per subscription, customer and UTC day.

    Defined for days up to `last_day` (the day before the simulation stopped); asking
    about a later day raises, because what happens after the horizon was not simulated.
    """

    def __init__(self, lines: Sequence[SubscriptionLine], last_day: date) -> None:
        self.last_day = last_day
        self._lines = {line.subscription_id: line for line in lines}
        self._by_customer: dict[str, list[SubscriptionLine]] = defaultdict(list)
        for line in lines:
            self._by_customer[line.customer_id].append(line)

    def _check(self, day: date) -> int:
        if day > self.last_day:
            raise ValueError(f"{day} is after the simulated horizon ({self.last_day})")
        # End of day d is everything strictly before the start of day d + 1.
        return day_start(day) + DAY - 1

    def subscription_mrr(self, subscription_id: str, at: int) -> int:
        """MRR of one subscription after all its changes at or before unix time `at`."""
        return self._lines[subscription_id].at(at)

    def mrr(self, customer_id: str, day: date) -> dict[str, int]:
        """Customer MRR at the end of `day` (UTC) per currency; currencies at 0 left out."""
        end = self._check(day)
        totals: dict[str, int] = defaultdict(int)
        for line in self._by_customer.get(customer_id, ()):
            totals[line.currency] += line.at(end)
        return {c: v for c, v in sorted(totals.items()) if v}

    def total_mrr(self, day: date) -> dict[str, int]:
        """Account MRR at the end of `day` per currency; currencies at 0 left out."""
        end = self._check(day)
        totals: dict[str, int] = defaultdict(int)
        for line in self._lines.values():
            totals[line.currency] += line.at(end)
        return {c: v for c, v in sorted(totals.items()) if v}

    def customers(self) -> list[str]:
        """Customers that ever had a subscription, in order of their first one."""
        return list(self._by_customer)

    def movements(self) -> list[TruthMovement]:
        """One row per customer, currency and day whose end-of-day MRR differs from the
        previous day's end; changes inside one day net out. Ordered by day, customer."""
        rows: list[TruthMovement] = []
        for customer_id, lines in self._by_customer.items():
            changes: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
            for line in lines:
                before = 0
                for ts, mrr in zip(line.times, line.mrrs, strict=True):
                    changes[line.currency][utc_day(ts)] += mrr - before
                    before = mrr
            for currency, by_day in changes.items():
                level = 0
                for day in sorted(by_day):
                    if day > self.last_day:
                        break
                    delta = by_day[day]
                    if delta:
                        rows.append(TruthMovement(customer_id, day, currency, level, level + delta))
                        level += delta
        rows.sort(key=lambda r: (r.day, r.customer_id, r.currency))
        return rows


@dataclass(frozen=True, slots=True)
class Simulation:
    """A simulated account: Stripe events sorted by `created`, and what they must add up to."""

    events: list[dict[str, Any]]
    truth: Truth
    shape: Shape
    api_version: str
    start: int
    until: int  # the account ran through [start, until); a UTC midnight
    account: str | None
    customer_ids: tuple[str, ...]
    subscription_ids: tuple[str, ...]


def event_bytes(event: dict[str, Any]) -> bytes:
    """The body Stripe would POST for `event`: pretty-printed JSON, two-space indent."""
    return json.dumps(event, indent=2).encode()
