"""Query parameters shared by every /v1 router, validated before they reach SQL."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import Query

from service.kit.errors import invalid_parameter

# Printable text only: a NUL byte is valid in a URL but not in a PostgreSQL string.
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"
# Dates outside this range are refused rather than overflowing period arithmetic.
MIN_DAY = date(1970, 1, 1)
MAX_DAY = date(2999, 12, 1)

AccountQuery = Annotated[
    str,
    Query(
        max_length=255,
        pattern=PRINTABLE,
        description="Stripe Connect account (acct_...); empty for the platform's own events",
    ),
]


def check_day_bounds(**days: date | None) -> None:
    for name, value in days.items():
        if value is not None and not MIN_DAY <= value <= MAX_DAY:
            raise invalid_parameter(name, f"must be between {MIN_DAY} and {MAX_DAY}")
