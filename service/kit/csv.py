"""The one CSV writer for BI tools (design §7): cells as BI tools read them, never as
formulas a spreadsheet would run; every export streamed whole (no page cap)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import Query, Request
from fastapi.responses import Response, StreamingResponse

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
# A spreadsheet runs a cell starting with these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")
# Rows per chunk of a streamed export: large enough that the per-chunk overhead vanishes,
# small enough that a 100k-row export never sits in memory whole.
STREAM_ROWS = 500

# `?format=` of every list route, and the OpenAPI entry of their CSV answer.
FormatQuery = Annotated[
    Literal["json", "csv"] | None,
    Query(alias="format", description="`csv` for BI tools (or send `Accept: text/csv`)"),
]
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}
}


def wants_csv(request: Request, format_: str | None) -> bool:
    """`?format=` decides; without it, an `Accept: text/csv` header."""
    if format_ is not None:
        return format_ == "csv"
    return "text/csv" in request.headers.get("accept", "")


def iso_time(value: datetime) -> str:
    """ISO 8601 with its zone, as the JSON answers spell it (`Z` for UTC). A naive value
    is UTC (SQLite hands back timestamps without their zone)."""
    aware = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return aware.isoformat().replace("+00:00", "Z")


def cell(value: Any) -> str:
    """None as empty, booleans as JSON spells them, times in ISO 8601 with zone, numbers
    as they are; text that a spreadsheet would run as a formula is quoted with a leading
    `'` (a negative amount such as "-80.00" is a number and stays as it is)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        if value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
            return "'" + value
        return str(value)
    if isinstance(value, datetime):
        return iso_time(value)
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _disposition(filename: str | None) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'} if filename else {}


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
    return Response(
        buffer.getvalue(),
        media_type=CSV_MEDIA_TYPE,
        headers={**_disposition(filename), **(headers or {})},
    )


def csv_chunks(header: Sequence[str], rows: Iterable[Iterable[Any]]) -> Iterator[str]:
    """The CSV text in chunks of `STREAM_ROWS` lines, header first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for n, row in enumerate(rows, start=1):
        writer.writerow([cell(v) for v in row])
        if n % STREAM_ROWS == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def csv_stream(
    header: Sequence[str],
    rows: Iterable[Iterable[Any]],
    *,
    filename: str,
    headers: Mapping[str, str] | None = None,
) -> StreamingResponse:
    """A whole list as CSV, written while it is read (`rows` is usually a generator over
    keyset batches): the request's session must stay open until the body is sent, so
    the route takes `service.db.StreamSessionDep`."""
    return StreamingResponse(
        csv_chunks(header, rows),
        media_type=CSV_MEDIA_TYPE,
        headers={**_disposition(filename), **(headers or {})},
    )
