"""CSV for BI tools: one row per data item, stable column names from the definitions,
written by the kit's one CSV writer."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import chain
from typing import Any

from fastapi import Response
from pydantic import BaseModel

from service.kit.csv import cell, csv_response, csv_stream
from service.kit.money import display
from service.ledger.models import MrrMovement
from service.ledger.schemas import Money
from service.metrics.closing import FIGURES, metric_of, sparse
from service.metrics.definitions import METRICS
from service.metrics.schemas import (
    ClosedPeriodsPage,
    ExplainAnswer,
    PeriodsFreshness,
    RestatementOut,
)

CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"text/csv": {"schema": {"type": "string"}}},
        "description": "JSON, or CSV with `format=csv` / `Accept: text/csv` (one row per "
        "`data` item; amounts as integer minor units plus `<name>_display`). The "
        "answer's freshness is in the `X-As-Of`, `X-Refreshed-At`, `X-Stale` and "
        "`X-Stale-Seconds` headers (and `X-As-Known-On` when asked).",
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
    known = getattr(answer, "as_known_on", None)
    if known is not None:
        headers["X-As-Known-On"] = cell(known)
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


# Closed months and restatements: long, one line per month (or restatement) and figure,
# so that a spreadsheet filters and pivots them by `metric` and the columns never depend
# on which figures a month keeps.
PERIOD_COLUMNS = (
    "period", "period_start", "period_end", "currency", "closed_at", "as_of", "restatements",
    "metric", "kind", "at_close", "at_close_display", "now", "now_display", "change",
    "change_display",
)  # fmt: skip
RESTATEMENT_COLUMNS = (
    "restatement_id", "period", "period_start", "currency", "detected_at", "metric", "kind",
    "old", "old_display", "new", "new_display", "change", "change_display", "event_ids",
)  # fmt: skip


def _freshness_headers(page: PeriodsFreshness) -> dict[str, str]:
    return {
        "X-As-Of": cell(page.as_of),
        "X-Refreshed-At": cell(page.refreshed_at),
        "X-Stale": cell(page.stale),
        "X-Stale-Seconds": cell(page.stale_seconds),
    }


def _kind(metric: str) -> str | None:
    known = METRICS.get(metric_of(metric))
    return known.kind if known else None


def _shown(amount: int | None, currency: str, kind: str | None) -> str | None:
    return display(amount, currency) if kind == "amount" and amount is not None else None


def _figure(metric: str, old: int | None, new: int | None, currency: str) -> tuple[Any, ...]:
    kind = _kind(metric)
    change = None if old is None or new is None else new - old
    return (
        metric, kind, old, _shown(old, currency, kind), new, _shown(new, currency, kind),
        change, _shown(change, currency, kind),
    )  # fmt: skip


def _in_order(names: Iterable[str]) -> list[str]:
    """The kept figures' order (MRR and customers at both ends, then the movements), any
    other name after them: the same on both engines, in both files."""
    known = set(names)
    return [m for m in FIGURES if m in known] + sorted(known.difference(FIGURES))


def periods_csv(page: ClosedPeriodsPage) -> Response:
    """One line per closed month and figure: at the close, now, and the change."""

    def rows() -> Iterator[tuple[Any, ...]]:
        for p in page.data:
            for m in _in_order([*p.figures_at_close, *p.figures]):
                absent = 0 if sparse(m) else None
                at_close, now = p.figures_at_close.get(m, absent), p.figures.get(m, absent)
                yield (
                    p.period, p.period_start, p.period_end, p.currency, p.closed_at, p.as_of,
                    p.restatements, *_figure(m, at_close, now, p.currency),
                )  # fmt: skip

    return csv_stream(
        PERIOD_COLUMNS, rows(), filename="periods.csv", headers=_freshness_headers(page)
    )


def restatements_csv(header: PeriodsFreshness, found: Iterable[RestatementOut]) -> Response:
    """One line per restatement and figure it changed (old, new, change), with the Stripe
    events behind the restatement on each (space-separated, as in movements.csv)."""

    def rows() -> Iterator[tuple[Any, ...]]:
        for r in found:
            changes = {c.metric: c for c in r.changes}
            for m in _in_order(changes):
                c = changes[m]
                yield (
                    r.id, r.period, f"{r.period}-01", r.currency, r.detected_at,
                    *_figure(m, c.old, c.new, r.currency), " ".join(r.event_ids),
                )  # fmt: skip

    return csv_stream(
        RESTATEMENT_COLUMNS, rows(), filename="restatements.csv",
        headers=_freshness_headers(header),
    )  # fmt: skip
