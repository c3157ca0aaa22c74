"""/v1/customers, /v1/subscriptions, /v1/fx-rates: the ledger, traceable to events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from service.db import SessionDep
from service.kit.auth import ApiKeyDep, SettingsDep, WriteKeyDep
from service.kit.errors import ApiError, ErrorResponse
from service.kit.params import PRINTABLE, AccountQuery
from service.ledger import service
from service.ledger.fx import FxQuote, FxRateError
from service.ledger.schemas import (
    CustomerOut,
    FxRatesApplied,
    FxRatesIn,
    FxRatesOut,
    SubscriptionDetailOut,
)

router = APIRouter(prefix="/v1", tags=["ledger"], responses={401: {"model": ErrorResponse}})

StripeId = Annotated[str, Path(min_length=1, max_length=255, pattern=PRINTABLE)]


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
