"""CSV for BI tools (design §7): one flat row per JSON object, money as amount + display,
written by the kit's one CSV writer."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, get_origin

from fastapi.responses import Response
from pydantic import BaseModel

from service.kit import csv
from service.ledger.schemas import Money


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


def _rows(models: Iterable[BaseModel], header: list[str]) -> Iterable[list[Any]]:
    return ([row.get(name) for name in header] for row in map(flatten, models))


def csv_response(models: Iterable[BaseModel], cls: type[BaseModel], filename: str) -> Response:
    header = columns(cls)
    return csv.csv_response(header, _rows(models, header), filename=filename)


def csv_stream(models: Iterable[BaseModel], cls: type[BaseModel], filename: str) -> Response:
    """Every row of a list, written while it is read (the route's session must be a
    `StreamSessionDep`)."""
    header = columns(cls)
    return csv.csv_stream(header, _rows(models, header), filename=filename)
