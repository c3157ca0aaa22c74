"""Reporting-currency conversion with the rate effective on a movement's day."""

from __future__ import annotations

import bisect
import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from pathlib import Path

from service.kit.money import convert


@dataclass(frozen=True, slots=True)
class FxQuote:
    currency: str  # lowercase, as Stripe writes currencies
    day: date
    rate: Decimal  # 1 unit of `currency` = `rate` units of the reporting currency


class FxTable:
    """Rates for one reporting currency; a day uses the latest rate on or before it."""

    def __init__(self, reporting: str, quotes: Iterable[FxQuote] = ()) -> None:
        self.reporting = reporting.lower()
        self._days: dict[str, list[date]] = {}
        self._rates: dict[str, list[Decimal]] = {}
        for q in sorted(quotes, key=lambda q: (q.currency, q.day)):
            self._days.setdefault(q.currency, []).append(q.day)
            self._rates.setdefault(q.currency, []).append(q.rate)

    def rate(self, currency: str, day: date) -> Decimal | None:
        currency = currency.lower()
        if currency == self.reporting:
            return Decimal(1)
        days = self._days.get(currency)
        if not days:
            return None
        i = bisect.bisect_right(days, day)
        return self._rates[currency][i - 1] if i else None

    def to_reporting(self, amount: int, currency: str, day: date) -> int | None:
        rate = self.rate(currency, day)
        if rate is None:
            return None
        return convert(amount, currency, self.reporting, rate)


class FxFileError(ValueError):
    pass


def read_fx_csv(path: Path) -> list[FxQuote]:
    """CSV with header `currency,day,rate` (ISO codes, ISO dates, decimal rates)."""
    quotes = []
    with path.open(newline="") as f:
        for n, row in enumerate(csv.DictReader(f), start=2):
            try:
                quotes.append(
                    FxQuote(
                        currency=row["currency"].strip().lower(),
                        day=date.fromisoformat(row["day"].strip()),
                        rate=Decimal(row["rate"].strip()),
                    )
                )
            except (KeyError, ValueError, InvalidOperation, AttributeError) as exc:
                raise FxFileError(f"{path}:{n}: expected currency,day,rate ({exc})") from None
    return quotes
