"""CSV for BI tools (design §7): one flat row per JSON object, money as amount + display."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from typing import Any, get_origin

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from service.ledger.schemas import Money

CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}}
}
# A spreadsheet runs a cell starting with these as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def wants_csv(request: Request, format_: str | None) -> bool:
    if format_ is not None:
        return format_ == "csv"
    return "text/csv" in request.headers.get("accept", "")


def _is_money(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"amount", "currency", "display"}


def flatten(model: BaseModel) -> dict[str, Any]:
    """Scalars as they are; Money as `x` (minor units) and `x_display` plus one `currency`
    column; nested lists (breakdowns) are JSON-only."""
    row: dict[str, Any] = {}
    for name, value in model.model_dump(mode="json").items():
        if _is_money(value):
            row[name] = value["amount"]
            row[f"{name}_display"] = value["display"]
            row.setdefault("currency", value["currency"])
        elif not isinstance(value, list | dict):
            row[name] = value
    return row


def columns(cls: type[BaseModel]) -> list[str]:
    """The header `flatten` fills, known without a row (an empty export still has one)."""
    names: list[str] = []
    for name, info in cls.model_fields.items():
        if info.annotation is Money:
            names += [name, f"{name}_display"]
            if "currency" not in names:
                names.append("currency")
        elif get_origin(info.annotation) not in (list, dict):
            names.append(name)
    return names


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _NUMBER.fullmatch(value):
        return "'" + value
    return "" if value is None else value


def csv_response(models: Iterable[BaseModel], cls: type[BaseModel], filename: str) -> Response:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(cls), lineterminator="\n")
    writer.writeheader()
    for model in models:
        writer.writerow({k: _cell(v) for k, v in flatten(model).items()})
    return Response(
        buffer.getvalue(),
        media_type=CSV_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
