"""CSV for BI tools: one row per data item, stable column names from the definitions."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from itertools import chain
from typing import Any

from fastapi import Response
from pydantic import BaseModel

from service.ledger.schemas import Money
from service.metrics.definitions import METRICS

CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "JSON, or CSV with `format=csv` / `Accept: text/csv` (one row per "
        "`data` item; amounts as integer minor units plus `<name>_display`). The "
        "answer's freshness is in the `X-As-Of`, `X-Refreshed-At` and `X-Stale` headers.",
    }
}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, date | datetime):
        return value.isoformat()
    return str(value)


def csv_columns(lead: tuple[str, ...], metrics: tuple[str, ...]) -> list[str]:
    return [*lead, "currency", *chain.from_iterable(METRICS[m].csv_columns() for m in metrics)]


def to_csv(answer: Any, lead: tuple[str, ...], metrics: tuple[str, ...], name: str) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(csv_columns(lead, metrics))
    for item in answer.data:
        row = [_cell(getattr(item, c)) for c in lead] + [answer.currency]
        for m in metrics:
            value = getattr(item, m)
            if METRICS[m].kind == "amount":
                money = value if isinstance(value, Money) else None
                row += [_cell(money and money.amount), _cell(money and money.display)]
            else:
                row.append(_cell(value))
        writer.writerow(row)
    headers = {
        "Content-Disposition": f'attachment; filename="{name}.csv"',
        "X-As-Of": _cell(answer.as_of),
        "X-Refreshed-At": _cell(answer.refreshed_at),
        "X-Stale": _cell(answer.stale),
    }
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


def respond(
    answer: BaseModel, fmt: str, lead: tuple[str, ...], metrics: tuple[str, ...], name: str
) -> Response:
    """The answer as CSV or JSON. JSON is dumped here, from the model the service just
    built and validated: handed back as a model, FastAPI would validate it a second time
    against the route's `response_model` (which still documents it in OpenAPI), on one
    more threadpool hop."""
    if fmt == "csv":
        return to_csv(answer, lead, metrics, name)
    return Response(answer.model_dump_json(), media_type="application/json")


LEDGER_COLUMNS = (
    "id", "customer_id", "day", "movement", "currency", "from_mrr", "to_mrr", "delta",
    "reporting_currency", "fx_rate", "from_mrr_reporting", "to_mrr_reporting",
    "delta_reporting", "churn_reason", "churn_feedback", "event_ids", "subscription_ids",
)  # fmt: skip


def ledger_csv(page: Any) -> Response:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(LEDGER_COLUMNS)
    for m in page.data:
        rep = m.reporting
        writer.writerow(
            _cell(v)
            for v in (
                m.id, m.customer_id, m.day, m.movement.value, m.delta.currency,
                m.from_mrr.amount, m.to_mrr.amount, m.delta.amount, rep.currency, rep.fx_rate,
                rep.from_mrr, rep.to_mrr, rep.delta, m.churn_reason and m.churn_reason.value,
                m.churn_feedback, " ".join(m.event_ids), " ".join(m.subscription_ids),
            )
        )  # fmt: skip
    headers = {"X-As-Of": _cell(page.as_of), "X-Next-Cursor": page.next_cursor or ""}
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
