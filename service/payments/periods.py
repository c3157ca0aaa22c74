"""Calendar periods (UTC) for the recovery metrics: [start, end) split by interval."""

from __future__ import annotations

from datetime import date, timedelta
from enum import StrEnum


class Interval(StrEnum):
    day = "day"
    week = "week"  # ISO weeks, starting Monday
    month = "month"
    quarter = "quarter"
    year = "year"
    range = "range"  # one period: exactly [start, end)


def floor(day: date, interval: Interval) -> date:
    if interval is Interval.week:
        return day - timedelta(days=day.weekday())
    if interval is Interval.month:
        return day.replace(day=1)
    if interval is Interval.quarter:
        return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)
    if interval is Interval.year:
        return date(day.year, 1, 1)
    return day


def _add_months(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def next_start(day: date, interval: Interval) -> date:
    start = floor(day, interval)
    if interval is Interval.day:
        return start + timedelta(days=1)
    if interval is Interval.week:
        return start + timedelta(days=7)
    if interval is Interval.month:
        return _add_months(start, 1)
    if interval is Interval.quarter:
        return _add_months(start, 3)
    if interval is Interval.year:
        return date(start.year + 1, 1, 1)
    raise ValueError("a range has no next period")


def split(start: date, end: date, interval: Interval) -> list[tuple[date, date]]:
    """Calendar periods covering [start, end); the first and last are clipped to it, so an
    explicit start or end is honoured exactly."""
    if interval is Interval.range:
        return [(start, end)] if start < end else []
    periods = []
    cursor = start
    while cursor < end:
        nxt = min(next_start(cursor, interval), end)
        periods.append((cursor, nxt))
        cursor = nxt
    return periods
