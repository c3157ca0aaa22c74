"""/v1/failed-payments and /v1/metrics/recovery: episodes, traceable to their events."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from service.db import SessionDep, StreamSessionDep
from service.kit.auth import ApiKeyDep, SettingsDep
from service.kit.csv import CSV_RESPONSE, FormatQuery, wants_csv
from service.kit.errors import ApiError, ErrorResponse
from service.kit.params import PRINTABLE, AccountQuery, check_day_bounds
from service.kit.periods import Interval, floor
from service.kit.time import now_ts, utc_day
from service.ledger.dependencies import require_current_reporting_currency
from service.payments import service
from service.payments.csvout import csv_response, csv_stream
from service.payments.models import Outcome
from service.payments.report import recovery_report
from service.payments.schemas import (
    EpisodeDetailOut,
    EpisodeOut,
    EpisodePage,
    RecoveryOut,
    RecoveryPeriod,
)

router = APIRouter(
    prefix="/v1", tags=["failed payments"], responses={401: {"model": ErrorResponse}}
)


def _check_range(start: date | None, end: date | None) -> None:
    check_day_bounds(start=start, end=end)
    if start is not None and end is not None and start >= end:
        raise ApiError(400, "invalid_request", "`start` must be before `end` (end is exclusive)")


@router.get(
    "/failed-payments",
    response_model=EpisodePage,
    summary="Failed-payment episodes, newest first, with cursor pagination (JSON or CSV)",
    description="CSV streams every matching episode from `cursor` on (no `limit`), as "
    "`failed-payments.csv`.",
    responses={**CSV_RESPONSE, 400: {"model": ErrorResponse}},
)
def list_failed_payments(
    request: Request,
    session: StreamSessionDep,
    _key: ApiKeyDep,
    account: AccountQuery = "",
    status: Annotated[Outcome | None, Query(description="Outcome: open, recovered, lost")] = None,
    customer: Annotated[str | None, Query(min_length=1, max_length=255, pattern=PRINTABLE)] = None,
    start: Annotated[date | None, Query(description="First failure on or after (UTC)")] = None,
    end: Annotated[date | None, Query(description="First failure before (UTC)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=1000, pattern=PRINTABLE)] = None,
    format_: FormatQuery = None,
) -> Any:
    _check_range(start, end)
    f = service.EpisodeFilter(account, status, customer, start, end)
    if wants_csv(request, format_):
        rows = service.all_episodes(session, f, cursor)
        return csv_stream(rows, EpisodeOut, "failed-payments.csv")
    return service.list_episodes(session, f, cursor, limit)


@router.get(
    "/failed-payments/{invoice_id}",
    response_model=EpisodeDetailOut,
    summary="One invoice's failed-payment episode with the Stripe events behind it",
    responses={404: {"model": ErrorResponse}},
)
def get_failed_payment(
    invoice_id: Annotated[str, Path(min_length=1, max_length=255, pattern=PRINTABLE)],
    session: SessionDep,
    _key: ApiKeyDep,
    account: AccountQuery = "",
) -> EpisodeDetailOut:
    found = service.episode_detail(session, account, invoice_id)
    if found is None:
        raise ApiError(404, "not_found", f"no failed-payment episode for invoice {invoice_id!r}")
    return found


@router.get(
    "/metrics/recovery",
    response_model=RecoveryOut,
    summary="Failed-payment recovery per period, for the episodes that started in it",
    description=(
        "Failed, recovered, open and lost invoices and amounts, recovery rates by count and "
        "amount, median and p90 time to recover, the attempt that recovered, MRR at risk at "
        "each period end, involuntary vs voluntary churned MRR, and a decline-code "
        "breakdown. Amounts in the reporting currency. Periods are whole UTC calendar "
        "periods, as for every /v1/metrics answer (`range`: one period, exactly "
        "[start, end)). Defaults: the last 12 months. CSV has one row per period (the "
        "breakdowns are JSON-only)."
    ),
    responses={
        **CSV_RESPONSE,
        422: {"model": ErrorResponse, "description": "Invalid parameter (`error.param`)"},
        503: {"model": ErrorResponse, "description": "`reporting_currency_changed`"},
    },
    dependencies=[Depends(require_current_reporting_currency)],
)
def get_recovery(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    _key: ApiKeyDep,
    account: AccountQuery = "",
    interval: Annotated[
        Interval, Query(description="Calendar periods, UTC; `range`: one period")
    ] = Interval.month,
    start: Annotated[
        date | None,
        Query(description="First day (UTC); rounded down to its period's start"),
    ] = None,
    end: Annotated[
        date | None,
        Query(description="Day after the last (UTC), exclusive; rounded up to a period end"),
    ] = None,
    format_: FormatQuery = None,
) -> Any:
    check_day_bounds(start=start, end=end)
    today = utc_day(now_ts())
    end = end or today + timedelta(days=1)
    if start is None:
        start = floor(end - timedelta(days=365), Interval.month)
    report = recovery_report(
        session,
        settings.ledger_options(),
        account=account,
        start=start,
        end=end,
        interval=interval,
        today=today,
    )
    if wants_csv(request, format_):
        return csv_response(report.data, RecoveryPeriod, "recovery.csv")
    return report
