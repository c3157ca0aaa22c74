"""Calendar periods in UTC: [start, end) cut into whole days, weeks (ISO, Monday), months,
quarters or years, for every /v1/metrics/* answer (the recovery report included).

A start is rounded down to its period's start and an end up to a period boundary, so that
every period is complete and two endpoints asked the same question answer the same
periods. `range` is the one interval without a calendar: one period, exactly [start, end).
"""

from __future__ import annotations

from datetime import date, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from service.kit.errors import invalid_parameter
from service.kit.params import MAX_DAY, check_day_bounds

# Far enough for any business, near enough that period arithmetic never leaves `date`.
MAX_PERIODS = 2000


class Interval(StrEnum):
    day = "day"
    week = "week"  # ISO weeks, starting Monday
    month = "month"
    quarter = "quarter"
    year = "year"
    range = "range"  # one period: exactly [start, end)


CALENDAR = tuple(i for i in Interval if i is not Interval.range)
_MONTHS = {Interval.month: 1, Interval.quarter: 3, Interval.year: 12}
DEFAULT_COUNT = {
    Interval.day: 30,
    Interval.week: 12,
    Interval.month: 12,
    Interval.quarter: 8,
    Interval.year: 5,
}


def _calendar(value: Any) -> Any:
    if not any(value == i.value for i in CALENDAR):
        allowed = ", ".join(repr(i.value) for i in CALENDAR[:-1])
        raise PydanticCustomError("enum", f"Input should be {allowed} or {CALENDAR[-1].value!r}")
    return value


# The interval of the endpoints answered from calendar tables: Interval without `range`.
CalendarInterval = Annotated[
    Interval,
    BeforeValidator(_calendar),
    WithJsonSchema({"type": "string", "enum": [i.value for i in CALENDAR]}),
]


def _months(interval: Interval) -> int:
    if interval is Interval.range:
        raise ValueError("a range has no calendar periods")
    return _MONTHS[interval]


def floor(day: date, interval: Interval) -> date:
    if interval is Interval.day:
        return day
    if interval is Interval.week:
        return day - timedelta(days=day.weekday())
    months = _months(interval)
    return date(day.year, (day.month - 1) // months * months + 1, 1)


def shift(start: date, interval: Interval, n: int = 1) -> date:
    """The period start n periods after `start` (a period start itself)."""
    if interval is Interval.day:
        return start + timedelta(days=n)
    if interval is Interval.week:
        return start + timedelta(days=7 * n)
    index = start.year * 12 + start.month - 1 + n * _months(interval)
    return date(index // 12, index % 12 + 1, 1)


def ceil(day: date, interval: Interval) -> date:
    start = floor(day, interval)
    return start if start == day else shift(start, interval)


def periods(
    start: date | None, end: date | None, interval: Interval, today: date
) -> list[tuple[date, date]]:
    """Whole calendar periods covering [start, end): start is rounded down to its period's
    start and end up to a period boundary, so that every answer is about complete periods.
    Defaults: the current period and the ones before it (DEFAULT_COUNT in all).

    Bad bounds are a 422 naming the parameter: outside MIN_DAY..MAX_DAY, end not after
    start, more than MAX_PERIODS periods."""
    check_day_bounds(start=start, end=end)
    if start is not None and end is not None and start >= end:
        raise invalid_parameter("end", "must be after start")
    if interval is Interval.range:
        if start is None or end is None:
            raise invalid_parameter("start" if start is None else "end", "required by range")
        return [(start, end)]
    last = ceil(end, interval) if end else shift(floor(min(today, MAX_DAY), interval), interval)
    first = floor(start, interval) if start else shift(last, interval, -DEFAULT_COUNT[interval])
    if first >= last:
        raise invalid_parameter("end", "must be after start")
    out: list[tuple[date, date]] = []
    cursor = first
    while cursor < last:
        if len(out) == MAX_PERIODS:
            raise invalid_parameter(
                "start", f"more than {MAX_PERIODS} periods: narrow start/end or widen interval"
            )
        nxt = shift(cursor, interval)
        out.append((cursor, nxt))
        cursor = nxt
    return out
