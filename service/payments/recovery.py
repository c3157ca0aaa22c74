"""Recovery arithmetic over the episodes that started in one period (design §6). Pure.

Amounts are integer minor units of the reporting currency. An episode without an FX rate
counts in every count and in no amount (`unconverted`), so a missing rate never inflates
or distorts a sum. Rates are exact decimals rounded half-even to 6 places; `None` when the
denominator is 0. Percentiles use the nearest-rank method: the smallest value with at
least p % of the values at or below it, always an observed duration (never interpolated).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from service.payments.models import Outcome

RATE_PLACES = Decimal("0.000001")


@dataclass(frozen=True, slots=True)
class EpisodeFacts:
    amount: int | None  # amount due in reporting minor units; None without an FX rate
    outcome: Outcome
    time_to_recover_s: int | None
    recovered_on_attempt: int | None
    decline_code: str | None


@dataclass
class Tally:
    invoices: int = 0
    amount: int = 0

    def add(self, amount: int | None) -> None:
        self.invoices += 1
        self.amount += amount or 0


@dataclass
class Outcomes:
    failed: Tally = field(default_factory=Tally)
    recovered: Tally = field(default_factory=Tally)
    open: Tally = field(default_factory=Tally)
    lost: Tally = field(default_factory=Tally)

    def add(self, f: EpisodeFacts) -> None:
        self.failed.add(f.amount)
        getattr(self, f.outcome.value).add(f.amount)

    @property
    def rate_by_count(self) -> Decimal | None:
        return ratio(self.recovered.invoices, self.failed.invoices)

    @property
    def rate_by_amount(self) -> Decimal | None:
        return ratio(self.recovered.amount, self.failed.amount)


@dataclass
class Summary:
    totals: Outcomes = field(default_factory=Outcomes)
    by_decline: dict[str | None, Outcomes] = field(default_factory=lambda: defaultdict(Outcomes))
    by_attempt: dict[int, Tally] = field(default_factory=lambda: defaultdict(Tally))
    unconverted: int = 0
    median_time_to_recover_s: int | None = None
    p90_time_to_recover_s: int | None = None


def ratio(numerator: int, denominator: int) -> Decimal | None:
    if denominator == 0:
        return None
    return (Decimal(numerator) / Decimal(denominator)).quantize(RATE_PLACES, ROUND_HALF_EVEN)


def nearest_rank(values: Sequence[int], percent: int) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-percent * len(ordered) // 100))  # ceil(p × n / 100), in integers
    return ordered[rank - 1]


def summarize(facts: Iterable[EpisodeFacts]) -> Summary:
    summary = Summary()
    durations = []
    for f in facts:
        summary.totals.add(f)
        summary.by_decline[f.decline_code].add(f)
        summary.unconverted += f.amount is None
        if f.outcome is Outcome.recovered:
            if f.recovered_on_attempt is not None:
                summary.by_attempt[f.recovered_on_attempt].add(f.amount)
            if f.time_to_recover_s is not None:
                durations.append(f.time_to_recover_s)
    summary.median_time_to_recover_s = nearest_rank(durations, 50)
    summary.p90_time_to_recover_s = nearest_rank(durations, 90)
    return summary
