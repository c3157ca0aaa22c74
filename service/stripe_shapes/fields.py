"""Defensive readers for raw Stripe JSON.

Stripe payloads vary by API version and by what was expanded: a field can be absent, `null`,
an id string or a whole object. These helpers turn any of those into one plain Python value
so the shape readers never raise on a surprising payload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

# The `type(...) is` tests below are fast paths for what JSON parsing produces (dict, list,
# str, int, None); they answer exactly as the isinstance checks after them, which an ABC
# such as Mapping makes slow, and the projector calls these for every field it reads.


def is_mapping(value: Any) -> bool:
    return type(value) is dict or (value is not None and isinstance(value, Mapping))


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if is_mapping(value) else {}


def get_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if type(value) is str:
        return value or None
    return value if isinstance(value, str) and value != "" else None


def get_int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if type(value) is int:
        return value
    if value is None:
        return None
    # bool is an int subclass; a stray True must not read as 1.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


class UnreadableField(ValueError):
    """A field present with a value no Stripe object has: the event cannot be projected
    (it becomes a dead letter with this as its reason) rather than be misread."""


COUNT_MAX = 2**63 - 1


def get_count(obj: Mapping[str, Any], key: str) -> int | None:
    """A count such as `quantity`: None when absent or null; an integer of 0..2**63-1
    otherwise. Anything else raises UnreadableField: orjson reads an integer past 64 bits
    as a float, and reading that as "no quantity" billed it as 1."""
    value = obj.get(key)
    if value is None:
        return None
    if type(value) is int and 0 <= value <= COUNT_MAX:
        return value
    raise UnreadableField(f"{key} {value!r} is not an integer of 0..2**63-1")


def get_bool(obj: Mapping[str, Any], key: str) -> bool:
    return obj.get(key) is True


def get_decimal(obj: Mapping[str, Any], key: str) -> Decimal | None:
    """Read an amount without passing through binary floats.

    `*_decimal` fields are strings; `percent_off` is a JSON number, which Python parses as
    float, so it goes through `str()` to keep the digits Stripe sent (33.3, not 33.29999...).
    """
    value = obj.get(key)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = str(value)
    try:
        result = Decimal(value)
    except (InvalidOperation, TypeError, ValueError):
        return None
    return result if result.is_finite() else None


def expandable_id(value: Any) -> str | None:
    """The id of an expandable field, whether Stripe sent the id or the expanded object."""
    if isinstance(value, str):
        return value or None
    if is_mapping(value):
        return get_str(value, "id")
    return None


def list_data(value: Any) -> list[Any]:
    """Elements of a Stripe list object (`{"object": "list", "data": [...]}`) or plain list."""
    if is_mapping(value):
        value = value.get("data")
    if type(value) is list:
        return list(value)
    if value is not None and isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    return []


def lower_currency(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and value else None


def str_dict(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in as_mapping(value).items() if v is not None}
