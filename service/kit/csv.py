"""The one CSV writer for BI tools (design §7): cells as BI tools read them, never as
formulas a spreadsheet would run."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from typing import Any

from fastapi.responses import Response

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
# A spreadsheet runs a cell starting with these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def cell(value: Any) -> str:
    """None as empty, booleans as JSON spells them, dates in ISO 8601, numbers as they are;
    text that a spreadsheet would run as a formula is quoted with a leading `'` (a
    negative amount such as "-80.00" is a number and stays as it is)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
            return "'" + value
        return str(value)
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


def csv_response(
    header: Sequence[str],
    rows: Iterable[Iterable[Any]],
    *,
    filename: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """A CSV answer: the header line, then one line per row, every value through `cell`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([cell(v) for v in row] for row in rows)
    out = {"Content-Disposition": f'attachment; filename="{filename}"'} if filename else {}
    return Response(
        buffer.getvalue(), media_type=CSV_MEDIA_TYPE, headers={**out, **(headers or {})}
    )
