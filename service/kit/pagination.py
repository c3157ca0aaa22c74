"""Opaque keyset cursors: the sort key of a page's last row, handed back as `cursor`.

A cursor is the key's values as a JSON array in unpadded URL-safe base64: clients pass it
back as is and never need to read it. Decoding checks every value's type, so a forged or
truncated cursor is an InvalidCursor, never an exception deeper down.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import date
from typing import Any

Key = str | int | date


# A cursor holds a row's key: ids fit BIGINT and text fits the id columns. A forged
# value outside them would overflow the database's parameter or be refused by it (a NUL
# in PostgreSQL text) instead of matching no row.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
TEXT_MAX = 255


class InvalidCursor(ValueError):
    pass


def encode_cursor(*key: Key) -> str:
    values = [k.isoformat() if isinstance(k, date) else k for k in key]
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _value(value: Any, type_: type[Key]) -> Key:
    if type_ is date and isinstance(value, str):
        return date.fromisoformat(value)
    # bool is an int subclass: a stray `true` is not an id.
    if type(value) is type_ and type_ is int and INT_MIN <= value <= INT_MAX:
        return value
    if type(value) is type_ and type_ is str and len(value) <= TEXT_MAX and value.isprintable():
        return value
    raise InvalidCursor(f"expected {type_.__name__}")


def decode_cursor(cursor: str, *types: type[Key]) -> tuple[Any, ...]:
    """The key `encode_cursor` made, its values checked against `types` (str, int, date)."""
    try:
        values = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if isinstance(values, list) and len(values) == len(types):
            return tuple(_value(v, t) for v, t in zip(values, types, strict=True))
    except (binascii.Error, ValueError, TypeError, RecursionError):
        pass
    raise InvalidCursor("not a cursor from a previous page")
