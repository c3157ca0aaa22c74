"""Money in integer minor units, with ISO 4217 exponents."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

# Stripe's zero-decimal currencies (amounts are whole units), and the ISO 4217
# three-decimal ones; every other currency has two decimals.
ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])


def exponent(currency: str) -> int:
    code = currency.lower()
    if code in ZERO_DECIMAL:
        return 0
    if code in THREE_DECIMAL:
        return 3
    return 2


def display(amount_minor: int, currency: str) -> str:
    """'1234.50' for 123450 USD, '1000' for 1000 JPY: exact, never through a float."""
    exp = exponent(currency)
    value = Decimal(amount_minor).scaleb(-exp)
    return f"{value:.{exp}f}"


def convert(amount_minor: int, currency: str, to_currency: str, rate: Decimal) -> int:
    """Convert minor units at `rate` (1 unit of `currency` = rate units of `to_currency`)."""
    if currency.lower() == to_currency.lower():
        return amount_minor
    shift = exponent(to_currency) - exponent(currency)
    value = Decimal(amount_minor) * rate * (Decimal(10) ** shift)
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))
