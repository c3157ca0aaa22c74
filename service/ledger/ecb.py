"""The ECB's euro foreign exchange reference rates (`churn-ledger fx-sync`): the feeds,
their XML, and cross rates to the reporting currency.

The ECB publishes, on TARGET working days around 16:00 CET, how many units of ~30
currencies one euro buys. A rate to the reporting currency R is the cross rate
r(R) / r(C); days without a publication (weekends, TARGET holidays) have no row, and the
ledger's lookup (FxTable) then takes the last rate published on or before the day.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from datetime import date
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

import httpx

from service.ledger.fx import FxQuote

ECB_BASE = "https://www.ecb.europa.eu/stats/eurofxref"
DAILY = "eurofxref-daily.xml"  # the latest working day
HIST_90D = "eurofxref-hist-90d.xml"  # the last 90 days
HIST = "eurofxref-hist.xml"  # every day since 4 January 1999 (several MB)
# The hist-90d feed is used while what is missing lies within this many days of today.
RECENT_DAYS = 80

_NS = "{http://www.ecb.int/vocabulary/2002-08-01/eurofxref}"
# The ECB's rates have 5 significant digits; a cross rate of two of them is kept to 10,
# rounded half-even: exact and reproducible (the same feed gives the same text), and far
# below the 40 characters a stored rate may have.
CROSS = Context(prec=10, rounding=ROUND_HALF_EVEN)

EurRates = Mapping[date, Mapping[str, Decimal]]  # day -> currency (lower) -> units per EUR


class EcbError(RuntimeError):
    """The feed could not be fetched or read; nothing is stored."""


def fetch(client: httpx.Client, feed: str, base: str = ECB_BASE) -> bytes:
    url = f"{base.rstrip('/')}/{feed}"
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        raise EcbError(f"{url}: {type(exc).__name__}: {exc}") from None
    if response.status_code != 200:
        raise EcbError(f"{url}: HTTP {response.status_code}")
    return response.content


def parse(xml: bytes) -> dict[date, dict[str, Decimal]]:
    """Every `<Cube time=...>` of a feed with its `<Cube currency=... rate=...>` rows.

    Raises EcbError for anything that is not that shape: a half-read feed must store
    nothing rather than some days."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise EcbError(f"not XML ({exc})") from None
    outer = root.find(f"{_NS}Cube")
    if outer is None:
        raise EcbError("not an ECB reference-rates feed (no Cube element)")
    days: dict[date, dict[str, Decimal]] = {}
    for day_cube in outer.findall(f"{_NS}Cube"):
        when = day_cube.get("time", "")
        try:
            day = date.fromisoformat(when)
        except ValueError:
            raise EcbError(f"Cube time {when!r} is not a date") from None
        rates: dict[str, Decimal] = {}
        for row in day_cube.findall(f"{_NS}Cube"):
            currency, text = row.get("currency", ""), row.get("rate", "")
            if not (len(currency) == 3 and currency.isascii() and currency.isalpha()):
                raise EcbError(f"{day}: currency {currency!r} is not an ISO 4217 code")
            try:
                rate = Decimal(text)
            except InvalidOperation:
                raise EcbError(f"{day} {currency}: rate {text!r} is not a number") from None
            if not rate.is_finite() or rate <= 0:
                raise EcbError(f"{day} {currency}: rate {text!r} is not positive")
            rates[currency.lower()] = rate
        if rates:
            days[day] = rates
    if not days:
        raise EcbError("the feed has no rates")
    return days


def cross_rates(eur: EurRates, reporting: str) -> list[FxQuote]:
    """Rates of every published currency to `reporting` (1 unit = rate units of it).

    A day on which the ECB did not publish the reporting currency gives no quotes: the
    previous day's rates go on applying."""
    reporting = reporting.lower()
    quotes = []
    for day, rates in sorted(eur.items()):
        if reporting == "eur":
            per_eur = Decimal(1)
        elif reporting in rates:
            per_eur = rates[reporting]
        else:
            continue
        for currency, rate in sorted(rates.items()):
            if currency != reporting:
                quotes.append(FxQuote(currency, day, CROSS.divide(per_eur, rate)))
        if reporting != "eur":
            quotes.append(FxQuote("eur", day, CROSS.plus(per_eur)))
    return quotes
