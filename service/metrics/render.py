"""CSV for BI tools: one row per data item, stable column names from the definitions,
written by the kit's one CSV writer."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from itertools import chain
from typing import Any

from fastapi import Response
from pydantic import BaseModel

from service.kit.csv import cell, csv_response, csv_stream
from service.ledger.models import MrrMovement
from service.ledger.schemas import Money
from service.metrics.definitions import METRICS
from service.metrics.schemas import ExplainAnswer

CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "JSON, or CSV with `format=csv` / `Accept: text/csv` (one row per "
        "`data` item; amounts as integer minor units plus `<name>_display`). The "
        "answer's freshness is in the `X-As-Of`, `X-Refreshed-At`, `X-Stale` and "
        "`X-Stale-Seconds` headers.",
    }
}


def csv_columns(lead: tuple[str, ...], metrics: tuple[str, ...]) -> list[str]:
    return [*lead, "currency", *chain.from_iterable(METRICS[m].csv_columns() for m in metrics)]


def _data_row(item: Any, currency: str, lead: tuple[str, ...], metrics: tuple[str, ...]) -> list:
    row = [getattr(item, c) for c in lead] + [currency]
    for m in metrics:
        value = getattr(item, m)
        if METRICS[m].kind == "amount":
            money = value if isinstance(value, Money) else None
            row += [money and money.amount, money and money.display]
        else:
            row.append(value)
    return row


def to_csv(answer: Any, lead: tuple[str, ...], metrics: tuple[str, ...], name: str) -> Response:
    headers = {
        "X-As-Of": cell(answer.as_of),
        "X-Refreshed-At": cell(answer.refreshed_at),
        "X-Stale": cell(answer.stale),
        "X-Stale-Seconds": cell(answer.stale_seconds),
    }
    return csv_response(
        csv_columns(lead, metrics),
        (_data_row(item, answer.currency, lead, metrics) for item in answer.data),
        filename=f"{name}.csv",
        headers=headers,
    )


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


def _ledger_row(m: MrrMovement) -> tuple[Any, ...]:
    return (
        m.id, m.customer_id, m.day, m.movement.value, m.currency, m.from_mrr, m.to_mrr,
        m.delta, m.reporting_currency, m.fx_rate, m.from_mrr_reporting, m.to_mrr_reporting,
        m.delta_reporting, m.churn_reason and m.churn_reason.value, m.churn_feedback,
        " ".join(m.event_ids), " ".join(m.subscription_ids),
    )  # fmt: skip


def ledger_csv(rows: Iterable[MrrMovement], as_of: datetime | None) -> Response:
    """Every matching ledger row, streamed (`rows` reads them in keyset batches)."""
    return csv_stream(
        LEDGER_COLUMNS, map(_ledger_row, rows), filename="movements.csv",
        headers={"X-As-Of": cell(as_of)},
    )  # fmt: skip


EXPLAIN_COLUMNS = (
    "customer_id", "ledger_row_id", "day", "movement", "currency", "delta",
    "reporting_currency", "fx_rate", "delta_reporting", "value", "event_ids",
    "subscription_ids", "churn_reason", "churn_feedback",
)  # fmt: skip


def explain_csv(answer: ExplainAnswer) -> Response:
    """One line per ledger row listed; the `value` column sums to the figure (also in
    `X-Explain-Value`, beside the metric tables' `X-Reported`)."""
    rows = (
        (
            c.customer_id, r.id, r.day, r.movement.value, r.delta.currency, r.delta.amount,
            r.reporting.currency, r.reporting.fx_rate, r.reporting.delta, r.value,
            " ".join(r.event_ids), " ".join(r.subscription_ids),
            r.churn_reason and r.churn_reason.value, r.churn_feedback,
        )
        for c in answer.data
        for r in c.rows
    )  # fmt: skip
    headers = {
        "X-As-Of": cell(answer.as_of),
        "X-Refreshed-At": cell(answer.refreshed_at),
        "X-Stale": cell(answer.stale),
        "X-Stale-Seconds": cell(answer.stale_seconds),
        "X-Explain-Value": cell(answer.value),
        "X-Reported": cell(answer.reported),
    }
    name = f"explain-{answer.metric}-{answer.period_start.isoformat()}.csv"
    return csv_stream(EXPLAIN_COLUMNS, rows, filename=name, headers=headers)
