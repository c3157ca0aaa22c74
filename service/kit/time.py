"""UTC days from Stripe's unix timestamps."""

from __future__ import annotations

from datetime import UTC, date, datetime

_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
DAY_S = 86400


def utc_day(ts: int) -> date:
    # Integer arithmetic: no tz database, no float, and fast in the projector's inner loop.
    return date.fromordinal(_EPOCH_ORDINAL + ts // DAY_S)


def day_start(day: date) -> int:
    return (day.toordinal() - _EPOCH_ORDINAL) * DAY_S


def now_ts() -> int:
    return int(datetime.now(UTC).timestamp())
