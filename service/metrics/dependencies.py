"""Query parameters shared by the metrics endpoints, validated into a MetricsQuery."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request

from service.kit.auth import SettingsDep
from service.kit.params import PRINTABLE, AccountQuery, check_day_bounds
from service.kit.periods import CalendarInterval, Interval, floor, shift
from service.metrics.schemas import SegmentBy
from service.metrics.selection import ChurnOptions, MetricsQuery, invalid

TEXT = PRINTABLE
_METADATA = re.compile(r"^metadata\[(.+)\]$")

Account = AccountQuery

METADATA_PARAM: dict[str, Any] = {
    "parameters": [
        {
            "name": "metadata",
            "in": "query",
            "style": "deepObject",
            "explode": True,
            "required": False,
            "description": "Segment filter on subscription metadata: `metadata[key]=value` "
            "(repeatable; all must match). A customer's metadata is that of its primary "
            "subscription.",
            "schema": {
                "type": "object",
                "additionalProperties": {"type": "string", "maxLength": 500},
            },
        }
    ]
}


# The dependencies below are async although they do no I/O: FastAPI runs a plain function
# on the threadpool, a hop per dependency and request.


def _metadata(request: Request) -> dict[str, str]:
    found = {}
    for name, value in request.query_params.multi_items():
        match = _METADATA.match(name)
        if not match:
            continue
        key = match.group(1)
        if len(key) > 40 or len(value) > 500 or not re.match(TEXT, key + value):
            raise invalid(name, "metadata keys are at most 40 and values 500 printable chars")
        found[key] = value
    return found


Currency = Annotated[
    str | None,
    Query(
        pattern=r"^[A-Za-z]{3}$",
        description="Reporting currency; defaults to REPORTING_CURRENCY. Only a "
        "currency the ledger was projected in is accepted.",
    ),
]
Plan = Annotated[
    str | None,
    Query(max_length=255, pattern=TEXT, description="Only customers on this plan/price id"),
]
BillingInterval = Annotated[
    str | None,
    Query(max_length=8, pattern=TEXT, description="Only customers billed per this interval"),
]
CurrencyCode = Annotated[
    str | None,
    Query(pattern=r"^[A-Za-z]{3}$", description="Only customers billed in this currency"),
]
IntervalParam = Annotated[CalendarInterval, Query(description="Calendar periods, UTC")]


async def metrics_query(
    request: Request,
    settings: SettingsDep,
    account: Account = "",
    start: Annotated[
        date | None, Query(description="First day (ISO 8601); rounded down to its period's start")
    ] = None,
    end: Annotated[
        date | None, Query(description="Day after the last (exclusive); rounded up to a period end")
    ] = None,
    interval: IntervalParam = Interval.month,
    currency: Currency = None,
    plan: Plan = None,
    billing_interval: BillingInterval = None,
    currency_code: CurrencyCode = None,
    segment_by: Annotated[
        SegmentBy | None, Query(description="One row per period and segment value")
    ] = None,
) -> MetricsQuery:
    return MetricsQuery(
        account=account,
        currency=currency,
        default_currency=settings.reporting_currency,
        start=start,
        end=end,
        interval=interval,
        today=datetime.now(UTC).date(),
        plan=plan,
        billing_interval=billing_interval,
        currency_code=currency_code,
        metadata=_metadata(request),
        segment_by=segment_by,
    )


MetricsQueryDep = Annotated[MetricsQuery, Depends(metrics_query)]


async def explain_query(
    request: Request,
    settings: SettingsDep,
    period_start: Annotated[
        date, Query(description="A day of the period (ISO 8601); rounded down to its start")
    ],
    account: Account = "",
    interval: IntervalParam = Interval.month,
    currency: Currency = None,
    plan: Plan = None,
    billing_interval: BillingInterval = None,
    currency_code: CurrencyCode = None,
) -> MetricsQuery:
    """One period of the metrics answers: what /v1/metrics/* would answer with
    `start=period_start` and the period's end, the same filters (no `segment_by`)."""
    check_day_bounds(period_start=period_start)
    start = floor(period_start, interval)
    return MetricsQuery(
        account=account,
        currency=currency,
        default_currency=settings.reporting_currency,
        start=start,
        end=shift(start, interval),
        interval=interval,
        today=datetime.now(UTC).date(),
        plan=plan,
        billing_interval=billing_interval,
        currency_code=currency_code,
        metadata=_metadata(request),
    )


ExplainQueryDep = Annotated[MetricsQuery, Depends(explain_query)]


async def churn_options(
    churn_good_below: Annotated[
        float, Query(ge=0, le=1, description="Monthly churn below this is `good`")
    ] = 0.05,
    churn_high_above: Annotated[
        float, Query(ge=0, le=1, description="Monthly churn above this is `high`")
    ] = 0.10,
    gross_margin: Annotated[
        float | None, Query(gt=0, le=1, description="Multiplies LTV when given")
    ] = None,
) -> ChurnOptions:
    return ChurnOptions(churn_good_below, churn_high_above, gross_margin)


ChurnOptionsDep = Annotated[ChurnOptions, Depends(churn_options)]


async def output_format(
    request: Request,
    format: Annotated[
        Literal["json", "csv"] | None,
        Query(description="`csv` for BI tools; same as `Accept: text/csv`"),
    ] = None,
) -> str:
    if format:
        return format
    accept = request.headers.get("accept", "")
    return "csv" if "text/csv" in accept and "application/json" not in accept else "json"


FormatDep = Annotated[str, Depends(output_format)]


async def as_known_on(
    as_known_on: Annotated[
        str | None,
        Query(
            max_length=40,
            description="The figures as published on this day (`YYYY-MM-DD`: to the end of "
            "the UTC day) or at this instant (ISO 8601 with zone): each month's as it was "
            "closed (POST /v1/periods/{month}/close), with the restatements detected by "
            "then; rates derived from them as without it. Monthly, whole-account answers "
            "of months closed by then only: any other interval, a filter, `segment_by` or "
            "a month not closed then is a 422 naming `as_known_on`, never a live figure "
            "passed off as published (cohorts: the cohort months; see there). Without it, "
            "the figures as they are now.",
        ),
    ] = None,
) -> date | datetime | None:
    if as_known_on is None:
        return None
    try:
        if len(as_known_on) == 10:
            return date.fromisoformat(as_known_on)
        when = datetime.fromisoformat(as_known_on.replace("Z", "+00:00"))
    except ValueError:
        raise invalid("as_known_on", "a day (YYYY-MM-DD) or an ISO 8601 instant") from None
    if when.tzinfo is None:
        raise invalid("as_known_on", "an instant needs its zone (e.g. Z)")
    return when


AsKnownOn = Annotated[date | datetime | None, Depends(as_known_on)]
