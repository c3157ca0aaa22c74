"""The one cursor codec: what it encodes comes back, typed; anything else is refused."""

from __future__ import annotations

import base64
from datetime import date

import pytest

from service.kit.pagination import InvalidCursor, decode_cursor, encode_cursor


def test_round_trip_keeps_the_types():
    cursor = encode_cursor(1_736_000_000, "in_1")
    assert decode_cursor(cursor, int, str) == (1_736_000_000, "in_1")
    assert decode_cursor(encode_cursor(date(2025, 2, 1), 42), date, int) == (date(2025, 2, 1), 42)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor  # URL-safe as is


def _raw(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    ["", "%%%", "W10", "not-a-cursor", _raw('[1,"a",2]'), _raw('["1","a"]'), _raw('[true,"a"]'),
     _raw('{"a":1}'), _raw('[1,2]'), _raw("[" * 5000), "\u00e9t\u00e9", _raw('[1e400,"a"]')],
)  # fmt: skip
def test_anything_else_is_invalid(cursor: str):
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor, int, str)


@pytest.mark.parametrize("cursor", [_raw('["2025-02-30",1]'), _raw("[20250201,1]")])
def test_dates_are_checked(cursor: str):
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor, date, int)


@pytest.mark.parametrize(
    ("text", "types"),
    [
        (f'[{2**63},"a"]', (int, str)),
        (f'[{-(2**63) - 1},"a"]', (int, str)),
        ('[1,"a\\u0000b"]', (int, str)),
        ('[1,"a\\ud800"]', (int, str)),
        (f'[1,"{"x" * 256}"]', (int, str)),
        (f'["2025-01-01",{10**30}]', (date, int)),
    ],
)
def test_values_outside_the_columns_are_invalid(text: str, types: tuple[type, ...]):
    # Such a key matches no row: decoding it used to overflow the database parameter (500).
    with pytest.raises(InvalidCursor):
        decode_cursor(_raw(text), *types)


def test_bounds_themselves_decode():
    assert decode_cursor(encode_cursor(2**63 - 1, "x" * 255), int, str) == (2**63 - 1, "x" * 255)
