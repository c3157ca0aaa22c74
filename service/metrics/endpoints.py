"""/v1/metrics/* (from the precomputed tables) and /v1/movements (the ledger rows)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from service.db import SessionDep, StreamSessionDep
from service.kit.auth import SettingsDep, require_api_key, require_write_key
from service.kit.errors import ErrorResponse
from service.ledger.dependencies import require_current_reporting_currency
from service.ledger.models import Movement
from service.metrics import definitions as D
from service.metrics import service
from service.metrics.dependencies import (
    METADATA_PARAM,
    TEXT,
    Account,
    AsKnownOn,
    ChurnOptionsDep,
    ExplainQueryDep,
    FormatDep,
    MetricsQueryDep,
)
from service.metrics.explain import EXPLAINABLE
from service.metrics.render import (
    CSV_RESPONSE,
    explain_csv,
    ledger_csv,
    periods_csv,
    respond,
    restatements_csv,
)
from service.metrics.schemas import (
    ChurnAnswer,
    ClosedPeriodOut,
    ClosedPeriodsPage,
    CohortsAnswer,
    ExplainAnswer,
    MovementsAnswer,
    MovementsPage,
    MrrAnswer,
    ReasonsAnswer,
    RestatementsPage,
)

REPORTING_CHANGED = (
    "`reporting_currency_changed`: REPORTING_CURRENCY differs from the currency the "
    "ledger was computed in; `error.command` names what to run (`churn-ledger rebuild`)"
)
router = APIRouter(
    prefix="/v1",
    tags=["metrics"],
    # The key first: an unauthenticated caller learns nothing about the ledger.
    dependencies=[Depends(require_api_key), Depends(require_current_reporting_currency)],
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong API key"},
        503: {"model": ErrorResponse, "description": REPORTING_CHANGED},
        422: {"model": ErrorResponse, "description": "Invalid parameter (`error.param`)"},
    },
)

COMMON = """
Answers from the metric tables the service refreshes right after each projection
(`as_of`, `refreshed_at`, `stale` and `stale_seconds` say how fresh; periods starting
after today are left out). Amounts are integer minor units of the reporting currency: a
customer's MRR in it is the running sum of its ledger rows' `delta_reporting` (each
converted at its day's rate, so exchange-rate moves alone are never movements); rows with
no rate are left out and counted in `unconverted_movements`. Periods are whole UTC
calendar periods. Segments and filters use each customer's primary subscription (highest
MRR, then latest). Metrics:

"""
PERIOD_LEAD = ("period_start", "period_end", "segment", "segment_label")


def _doc(text: str, metrics: tuple[str, ...]) -> str:
    return text + "\n" + COMMON + D.formulas(metrics)


def _route(path: str, model: type, summary: str, text: str, metrics: tuple[str, ...]) -> Any:
    return router.get(
        path,
        response_model=model,
        summary=summary,
        description=_doc(text, metrics),
        responses=CSV_RESPONSE,
        openapi_extra=METADATA_PARAM,
    )


@_route("/metrics/mrr", MrrAnswer, "MRR, ARR, customers and ARPA per period",
        "State at the end of each period.", D.MRR_METRICS)  # fmt: skip
def get_mrr(
    query: MetricsQueryDep, fmt: FormatDep, session: StreamSessionDep, as_known_on: AsKnownOn = None
) -> Any:
    answer = service.mrr(session, query, as_known_on)
    return respond(answer, fmt, PERIOD_LEAD, D.MRR_METRICS, "mrr")


@_route("/metrics/movements", MovementsAnswer, "MRR movements per period",
        "New, expansion, contraction, churned and reactivation MRR with the MRR at both "
        "ends; `mrr_end = mrr_start + movements` holds exactly.", D.MOVEMENT_METRICS)  # fmt: skip
def get_movements(
    query: MetricsQueryDep, fmt: FormatDep, session: StreamSessionDep, as_known_on: AsKnownOn = None
) -> Any:
    answer = service.movements(session, query, as_known_on)
    return respond(answer, fmt, PERIOD_LEAD, D.MOVEMENT_METRICS, "movements")


@_route("/metrics/churn", ChurnAnswer, "Churn, retention, NRR/GRR, quick ratio, hazard, LTV",
        "Customer and MRR churn per period, with flags. With `as_known_on`, every rate, "
        "flag, ARPA and LTV is computed as without it, from the month's published MRR, "
        "movements, customers, turnover and customer-days.", D.CHURN_METRICS)  # fmt: skip
def get_churn(
    query: MetricsQueryDep,
    options: ChurnOptionsDep,
    fmt: FormatDep,
    session: StreamSessionDep,
    as_known_on: AsKnownOn = None,
) -> Any:
    answer = service.churn(session, query, options, as_known_on)
    return respond(answer, fmt, PERIOD_LEAD, D.CHURN_METRICS, "churn")


@_route("/metrics/cohorts", CohortsAnswer, "Monthly cohorts: logo and MRR retention",
        "Customers grouped by the month of their first MRR; one row per cohort and month "
        "since start, up to `through`. `start`/`end` select cohort months; `interval` is "
        "ignored (always month).\n\nWith `as_known_on`, each cell is its `month`'s as "
        "published: the close of a month keeps every cohort's cell of that month. The "
        "selected cohort months must have been closed by then (a 422 names the first that "
        "was not); a cohort's row then runs through the months closed by then and no "
        "further (the current month is never closed): cells of a month not closed then "
        "are left out, not answered live.", D.COHORT_METRICS)  # fmt: skip
def get_cohorts(
    query: MetricsQueryDep, fmt: FormatDep, session: StreamSessionDep, as_known_on: AsKnownOn = None
) -> Any:
    lead = ("cohort_month", "months_since_start", "month", "segment", "segment_label")
    answer = service.cohorts(session, query, as_known_on)
    return respond(answer, fmt, lead, D.COHORT_METRICS, "cohorts")


@_route("/metrics/churn-reasons", ReasonsAnswer, "Churned MRR and customers by reason",
        "Per period: voluntary / involuntary / unknown, and Stripe's cancellation feedback. "
        "Only combinations with churn appear. With `as_known_on`, each closed month's "
        "churn per reason and feedback as published.", D.REASON_METRICS)  # fmt: skip
def get_churn_reasons(
    query: MetricsQueryDep, fmt: FormatDep, session: StreamSessionDep, as_known_on: AsKnownOn = None
) -> Any:
    lead = (*PERIOD_LEAD, "reason", "feedback")
    answer = service.churn_reasons(session, query, as_known_on)
    return respond(answer, fmt, lead, D.REASON_METRICS, "churn-reasons")


@router.get(
    "/metrics/explain",
    response_model=ExplainAnswer,
    summary="The customers and ledger rows behind one figure, with their Stripe events",
    description="One figure of one period, as /v1/metrics/movements and /v1/metrics/mrr "
    "report it for the same `period_start`, `interval`, `currency` and segment filters, "
    "taken apart: every customer contributing to it, with the ledger rows (and the "
    "Stripe event ids behind each) that make up its part. The rows' `value`s sum to "
    "the customers' and those to `value`, which equals `reported` (the metric tables' "
    "figure) whenever `stale` is false; series left out for want of an FX rate are left "
    "out here too (explain `unconverted_movements` to see them). Read live from the "
    "ledger. CSV: one line per ledger row, `value` summing to the figure.\n\n"
    "Explainable metrics: " + ", ".join(f"`{m}`" for m in EXPLAINABLE) + " (`mrr` is "
    "`mrr_end`, `customers` is `customers_end`). Any other metric is a 422 listing "
    "these in `error.explainable`. A period starting after today is a 422.\n\n"
    + D.formulas(EXPLAINABLE),
    responses=CSV_RESPONSE,
    openapi_extra=METADATA_PARAM,
)
def get_explain(
    query: ExplainQueryDep,
    fmt: FormatDep,
    session: StreamSessionDep,
    metric: Annotated[
        str, Query(max_length=64, pattern=TEXT, description="The metric to take apart")
    ],
) -> Any:
    answer = service.explain(session, query, metric)
    if fmt == "csv":
        return explain_csv(answer)
    return Response(answer.model_dump_json(), media_type="application/json")


@router.get(
    "/movements",
    response_model=MovementsPage,
    summary="The MRR ledger rows, oldest first, with the Stripe events behind each",
    description="Live ledger (not the precomputed tables). Cursor pagination: pass "
    "`next_cursor` back as `cursor` while `has_more`. CSV (`format=csv` or `Accept: "
    "text/csv`) streams every matching row from `cursor` on (no `limit`), as "
    "`movements.csv`.",
    responses=CSV_RESPONSE,
)
def list_movements(
    session: StreamSessionDep,
    fmt: FormatDep,
    account: Account = "",
    start: Annotated[date | None, Query(description="First day, inclusive")] = None,
    end: Annotated[date | None, Query(description="Last day, exclusive")] = None,
    type: Annotated[Movement | None, Query(description="Movement type")] = None,
    customer: Annotated[
        str | None, Query(max_length=255, pattern=TEXT, description="Stripe customer id")
    ] = None,
    currency_code: Annotated[str | None, Query(pattern=r"^[A-Za-z]{3}$")] = None,
    cursor: Annotated[str | None, Query(max_length=200, pattern=TEXT)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    if fmt == "csv":
        f = service.LedgerFilter(account, start, end, type, customer, currency_code)
        rows = service.all_ledger_rows(session, f, cursor)
        return ledger_csv(rows, service.ledger_as_of(session, account))
    return service.ledger_rows(
        session, account, start=start, end=end, movement=type, customer=customer,
        currency_code=currency_code, cursor=cursor, limit=limit,
    )  # fmt: skip


# --- closed months ----------------------------------------------------------------------

MONTH = r"^[0-9]{4}-[0-9]{2}$"


@router.post(
    "/periods/{period}/close",
    response_model=ClosedPeriodOut,
    status_code=201,
    tags=["periods"],
    dependencies=[Depends(require_write_key)],
    summary="Close a month: freeze its published figures",
    description="Refreshes the account's metric tables, then keeps the month's figures "
    "(reporting currency, whole account) as published. A refresh that later changes them "
    "(a late or backdated event) records a restatement (GET /v1/restatements) and sends a "
    "`period.restated` alert through the alert webhook. Needs a write key. 409 when the "
    "month is closed already; 422 for a month that is not YYYY-MM or not over yet.",
    responses={
        403: {"model": ErrorResponse, "description": "Not a write key"},
        409: {"model": ErrorResponse, "description": "`period_closed`: closed already"},
    },
)
def close_period(
    session: SessionDep,
    settings: SettingsDep,
    period: Annotated[str, Path(max_length=7, description="The month, YYYY-MM")],
    account: Account = "",
) -> ClosedPeriodOut:
    today = datetime.now(UTC).date()
    return service.close_period(session, account, settings.reporting_currency, period, today)


@router.get(
    "/periods",
    response_model=ClosedPeriodsPage,
    tags=["periods"],
    summary="The closed months, with their figures at the close and as published now",
    description="Every closed month, oldest first. `as_of`, `stale` (and the `X-As-Of`, "
    "`X-Stale` headers of the CSV) say how current `figures` are: the metric tables' "
    "refreshes keep them. CSV (`format=csv` or `Accept: text/csv`) streams every month as "
    "`periods.csv`, one line per month and figure: `period`, `period_start`, "
    "`period_end`, `currency`, `closed_at`, `as_of` (the newest event included at the "
    "close), `restatements`, then `metric`, `kind` (amount: integer minor units, with "
    "`<column>_display`; count), `at_close`, `now` and `change` (now − at close).",
    responses=CSV_RESPONSE,
)
def list_periods(session: StreamSessionDep, fmt: FormatDep, account: Account = "") -> Any:
    page = service.closed_periods(session, account)
    if fmt == "csv":
        return periods_csv(page)
    return Response(page.model_dump_json(), media_type="application/json")


@router.get(
    "/restatements",
    response_model=RestatementsPage,
    tags=["periods"],
    summary="Changes to closed months: old and new figures and the events that caused them",
    description="Every restatement, oldest first (the refreshes find them: `as_of` and "
    "`stale` say how far they have looked). CSV (`format=csv` or `Accept: text/csv`) "
    "streams every one as `restatements.csv`, one line per restatement and figure it "
    "changed: `restatement_id`, `period`, `period_start`, `currency`, `detected_at`, "
    "`metric`, `kind` (amount: integer minor units, with `<column>_display`; count), "
    "`old`, `new`, `change` (new − old) and `event_ids` (the Stripe events behind the "
    "restatement, space-separated, on each of its lines).",
    responses=CSV_RESPONSE,
)
def list_restatements(
    session: StreamSessionDep,
    fmt: FormatDep,
    account: Account = "",
    period: Annotated[
        str | None, Query(max_length=7, pattern=MONTH, description="Only this month, YYYY-MM")
    ] = None,
) -> Any:
    if fmt == "csv":
        found = service.all_restatements(session, account, period)
        return restatements_csv(service.periods_freshness(session, account), found)
    page = service.restatements(session, account, period)
    return Response(page.model_dump_json(), media_type="application/json")
