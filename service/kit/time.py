"""UTC days from Stripe's unix timestamps."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from pydantic import AfterValidator

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
DAY_S = 86400


def utc_day(ts: int) -> date:
    # Integer arithmetic: no tz database, no float, and fast in the projector's inner loop.
    return date.fromordinal(_EPOCH_ORDINAL + ts // DAY_S)


def day_start(day: date) -> int:
    return (day.toordinal() - _EPOCH_ORDINAL) * DAY_S


def now_ts() -> int:
    return int(datetime.now(UTC).timestamp())


def aware_utc(value: datetime) -> datetime:
    """A stored time with its zone: SQLite hands `DateTime(timezone=True)` back naive."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Every time the API answers carries its zone (ISO 8601, `Z`), whichever engine stored it.
UtcDateTime = Annotated[datetime, AfterValidator(aware_utc)]
