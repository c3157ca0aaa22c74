"""/v1/customers, /v1/subscriptions, /v1/fx-rates: the ledger, traceable to events."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from service.db import SessionDep, StreamSessionDep
from service.kit.auth import ApiKeyDep, SettingsDep, WriteKeyDep
from service.kit.csv import CSV_RESPONSE, FormatQuery, cell, csv_stream, wants_csv
from service.kit.errors import ApiError, ErrorResponse
from service.kit.params import PRINTABLE, AccountQuery
from service.ledger import service
from service.ledger.dependencies import require_current_reporting_currency
from service.ledger.fx import FxQuote, FxRateError
from service.ledger.schemas import (
    CustomerOut,
    CustomerSort,
    CustomersPage,
    CustomerSummaryOut,
    FxRatesApplied,
    FxRatesIn,
    FxRatesOut,
    SubscriptionDetailOut,
    SubscriptionOut,
    SubscriptionsPage,
)

router = APIRouter(prefix="/v1", tags=["ledger"], responses={401: {"model": ErrorResponse}})

StripeId = Annotated[str, Path(min_length=1, max_length=255, pattern=PRINTABLE)]


CUSTOMER_COLUMNS = (
    "customer_id", "mrr", "mrr_display", "currency", "mrr_by_currency", "first_mrr_day",
    "last_movement_day", "last_movement",
)  # fmt: skip


def _customer_row(c: CustomerSummaryOut) -> tuple[Any, ...]:
    native = " ".join(f"{m.display} {m.currency}" for m in c.mrr_by_currency)
    return (
        c.customer_id, c.mrr.amount, c.mrr.display, c.mrr.currency, native, c.first_mrr_day,
        c.last_movement_day, c.last_movement and c.last_movement.value,
    )  # fmt: skip


@router.get(
    "/customers",
    response_model=CustomersPage,
    summary="Customers with their current MRR: search, sort, cursor pages (JSON or CSV)",
    description="Live ledger (not the precomputed tables). MRR is in the reporting "
    "currency, the sum of the customer's ledger rows' `delta_reporting`, so a page adds up "
    "as /v1/metrics/mrr does. Cursor pagination: pass `next_cursor` back as `cursor` (with "
    "the same `sort`) while `has_more`. CSV (`format=csv` or `Accept: text/csv`) answers "
    "every matching customer from `cursor` on (no `limit`), streamed, as `customers.csv`.",
    responses={
        **CSV_RESPONSE,
        422: {"model": ErrorResponse},
        503: {"model": ErrorResponse, "description": "`reporting_currency_changed`"},
    },
    dependencies=[Depends(require_current_reporting_currency)],
)
def list_customers(
    request: Request,
    session: StreamSessionDep,
    settings: SettingsDep,
    _key: ApiKeyDep,
    account: AccountQuery = "",
    q: Annotated[
        str | None,
        Query(
            max_length=255,
            pattern=PRINTABLE,
            description="Search: customer ids containing this text (case-insensitive)",
        ),
    ] = None,
    sort: Annotated[
        CustomerSort, Query(description="mrr_desc (default), mrr_asc or customer_id")
    ] = CustomerSort.mrr_desc,
    active: Annotated[
        bool | None, Query(description="true: MRR > 0 now; false: MRR 0 (churned or never)")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=1000, pattern=PRINTABLE)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format_: FormatQuery = None,
) -> Any:
    options = settings.ledger_options()
    if wants_csv(request, format_):
        rows = service.all_customers(
            session, options, account, search=q, sort=sort, active=active, cursor=cursor
        )
        return csv_stream(
            CUSTOMER_COLUMNS, map(_customer_row, rows), filename="customers.csv",
            headers={"X-As-Of": cell(service.as_of(session, account))},
        )  # fmt: skip
    return service.list_customers(
        session, options, account, search=q, sort=sort, active=active, cursor=cursor,
        limit=limit,
    )  # fmt: skip


@router.get(
    "/customers/{customer_id}",
    response_model=CustomerOut,
    summary="A customer's MRR, history and ledger rows with their Stripe event ids",
    responses={404: {"model": ErrorResponse}},
)
def get_customer(
    customer_id: StripeId, session: SessionDep, _key: ApiKeyDep, account: AccountQuery = ""
) -> CustomerOut:
    found = service.customer_detail(session, account, customer_id)
    if found is None:
        raise ApiError(404, "not_found", f"no customer {customer_id!r} in the ledger")
    return found


SUBSCRIPTION_COLUMNS = (
    "subscription_id", "customer_id", "status", "mrr", "mrr_display", "currency", "plan",
    "plan_name", "billing_interval", "cancel_at_period_end", "started_at", "ended_at",
    "last_event_id", "metadata",
)  # fmt: skip


def _subscription_row(s: SubscriptionOut) -> tuple[Any, ...]:
    return (
        s.subscription_id, s.customer_id, s.status, s.mrr.amount, s.mrr.display,
        s.mrr.currency, s.plan, s.plan_name, s.billing_interval, s.cancel_at_period_end,
        s.started_at, s.ended_at, s.last_event_id,
        json.dumps(s.metadata, sort_keys=True) if s.metadata else None,
    )  # fmt: skip


@router.get(
    "/subscriptions",
    response_model=SubscriptionsPage,
    summary="Subscriptions with their current MRR and state, cursor pages (JSON or CSV)",
    description="Live ledger. Ordered by subscription id; pass `next_cursor` back as "
    "`cursor` while `has_more`. MRR is in the subscription's own currency. CSV "
    "(`format=csv` or `Accept: text/csv`) streams every matching subscription from "
    "`cursor` on (no `limit`), as `subscriptions.csv`; `metadata` is a JSON object there.",
    responses={**CSV_RESPONSE, 422: {"model": ErrorResponse}},
)
def list_subscriptions(
    request: Request,
    session: StreamSessionDep,
    _key: ApiKeyDep,
    account: AccountQuery = "",
    customer: Annotated[str | None, Query(min_length=1, max_length=255, pattern=PRINTABLE)] = None,
    status: Annotated[
        str | None,
        Query(min_length=1, max_length=32, pattern=PRINTABLE, description="Stripe status"),
    ] = None,
    plan: Annotated[
        str | None, Query(min_length=1, max_length=255, pattern=PRINTABLE, description="Price id")
    ] = None,
    cursor: Annotated[str | None, Query(max_length=1000, pattern=PRINTABLE)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    format_: FormatQuery = None,
) -> Any:
    f = service.SubscriptionFilter(account, customer, status, plan)
    if wants_csv(request, format_):
        rows = service.all_subscriptions(session, f, cursor)
        return csv_stream(
            SUBSCRIPTION_COLUMNS, map(_subscription_row, rows), filename="subscriptions.csv",
            headers={"X-As-Of": cell(service.as_of(session, account))},
        )  # fmt: skip
    return service.list_subscriptions(session, f, cursor, limit)


@router.get(
    "/subscriptions/{subscription_id}",
    response_model=SubscriptionDetailOut,
    summary="A subscription's current MRR and every MRR change with its cause",
    responses={404: {"model": ErrorResponse}},
)
def get_subscription(
    subscription_id: StripeId, session: SessionDep, _key: ApiKeyDep, account: AccountQuery = ""
) -> SubscriptionDetailOut:
    found = service.subscription_detail(session, account, subscription_id)
    if found is None:
        raise ApiError(404, "not_found", f"no subscription {subscription_id!r} in the ledger")
    return found


@router.get("/fx-rates", response_model=FxRatesOut, summary="Rates to the reporting currency")
def get_fx_rates(session: SessionDep, settings: SettingsDep, _key: ApiKeyDep) -> FxRatesOut:
    return service.list_fx_rates(session, settings.ledger_options())


@router.put(
    "/fx-rates",
    response_model=FxRatesApplied,
    summary="Add or replace rates; reporting amounts of affected movements are recomputed",
    responses={422: {"model": ErrorResponse, "description": "A rate out of bounds"}},
)
def put_fx_rates(
    body: FxRatesIn, session: SessionDep, settings: SettingsDep, _key: WriteKeyDep
) -> FxRatesApplied:
    quotes = [FxQuote(r.currency, r.day, r.rate) for r in body.rates]
    try:
        recomputed = service.apply_fx_rates(session, settings.ledger_options(), quotes)
    except FxRateError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    return FxRatesApplied(rates=len(quotes), movements_recomputed=recomputed)
