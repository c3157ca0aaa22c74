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


# A rate outside these bounds is a typo (or an attack), not a currency: converting with
# 1e999999 overflows the reporting amounts' BIGINT columns. The stored text (String(40))
# must hold the rate exactly.
MIN_RATE = Decimal("1e-12")
MAX_RATE = Decimal("1e12")
RATE_TEXT_MAX = 40


class FxRateError(ValueError):
    """A rate `fx-load` and `PUT /v1/fx-rates` alike refuse (one validation for both)."""


def check_quotes(quotes: Iterable[FxQuote], reporting: str) -> None:
    """Refuse what would corrupt reporting amounts; the message names the first bad rate."""
    reporting = reporting.lower()
    for q in quotes:
        where = f"{q.currency.upper()} on {q.day}"
        if not (len(q.currency) == 3 and q.currency.isascii() and q.currency.isalpha()):
            raise FxRateError(f"currency {q.currency!r} is not a 3-letter ISO 4217 code")
        if q.currency.lower() == reporting:
            raise FxRateError(
                f"{where}: {reporting.upper()} is the reporting currency; its rate is always 1"
            )
        if not q.rate.is_finite() or not MIN_RATE <= q.rate <= MAX_RATE:
            raise FxRateError(f"{where}: rate {q.rate} is outside {MIN_RATE}..{MAX_RATE}")
        if len(str(q.rate)) > RATE_TEXT_MAX:
            raise FxRateError(f"{where}: rate has more than {RATE_TEXT_MAX} characters")


def read_fx_csv(path: Path) -> list[FxQuote]:
    """CSV with header `currency,day,rate` (ISO codes, ISO dates, decimal rates)."""
    quotes = []
    n = 1
    try:
        with path.open(newline="", encoding="utf-8") as f:
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
    except UnicodeDecodeError:
        raise FxFileError(f"{path}:{n}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise FxFileError(f"{path}:{n}: not a CSV file ({exc})") from None
    return quotes
