"""Calendar periods in UTC: [start, end) of whole days, weeks (ISO, Monday), months,
quarters and years."""

from __future__ import annotations

from datetime import date, timedelta
from enum import StrEnum

from service.kit.params import MAX_DAY, MIN_DAY

# Far enough for any business, near enough that period arithmetic never leaves `date`.
MAX_PERIODS = 2000


class PeriodInterval(StrEnum):
    day = "day"
    week = "week"
    month = "month"
    quarter = "quarter"
    year = "year"


_MONTHS = {PeriodInterval.month: 1, PeriodInterval.quarter: 3, PeriodInterval.year: 12}
DEFAULT_COUNT = {
    PeriodInterval.day: 30,
    PeriodInterval.week: 12,
    PeriodInterval.month: 12,
    PeriodInterval.quarter: 8,
    PeriodInterval.year: 5,
}


def floor(day: date, interval: PeriodInterval) -> date:
    if interval is PeriodInterval.day:
        return day
    if interval is PeriodInterval.week:
        return day - timedelta(days=day.weekday())
    months = _MONTHS[interval]
    return date(day.year, (day.month - 1) // months * months + 1, 1)


def shift(start: date, interval: PeriodInterval, n: int = 1) -> date:
    """The period start n periods after `start` (a period start itself)."""
    if interval is PeriodInterval.day:
        return start + timedelta(days=n)
    if interval is PeriodInterval.week:
        return start + timedelta(days=7 * n)
    index = start.year * 12 + start.month - 1 + n * _MONTHS[interval]
    return date(index // 12, index % 12 + 1, 1)


def ceil(day: date, interval: PeriodInterval) -> date:
    start = floor(day, interval)
    return start if start == day else shift(start, interval)


class PeriodError(ValueError):
    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def periods(
    start: date | None, end: date | None, interval: PeriodInterval, today: date
) -> list[tuple[date, date]]:
    """Whole calendar periods covering [start, end): start is rounded down to its period's
    start and end up to a period boundary, so that every answer is about complete periods.
    Defaults: the current period and the ones before it (DEFAULT_COUNT in all)."""
    for param, value in (("start", start), ("end", end)):
        if value is not None and not MIN_DAY <= value <= MAX_DAY:
            raise PeriodError(param, f"must be between {MIN_DAY} and {MAX_DAY}")
    last = ceil(end, interval) if end else shift(floor(min(today, MAX_DAY), interval), interval)
    first = floor(start, interval) if start else shift(last, interval, -DEFAULT_COUNT[interval])
    if first >= last:
        raise PeriodError("end", "must be after start")
    out: list[tuple[date, date]] = []
    cursor = first
    while cursor < last:
        if len(out) == MAX_PERIODS:
            raise PeriodError(
                "start", f"more than {MAX_PERIODS} periods: narrow start/end or widen interval"
            )
        nxt = shift(cursor, interval)
        out.append((cursor, nxt))
        cursor = nxt
    return out
