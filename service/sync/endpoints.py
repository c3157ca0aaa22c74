"""POST /v1/admin/reconcile: compare (and optionally repair) the ledger against Stripe.

Synchronous: it lists the account's live subscriptions from Stripe within the request
(about one API call per 100 subscriptions), which suits an operator or a cron job; very
large accounts are better served by `churn-ledger reconcile`, which writes the same run.
"""

from __future__ import annotations

import stripe
from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from service.db import SessionDep
from service.kit.auth import SettingsDep, require_admin_key
from service.kit.errors import ApiError, ErrorResponse
from service.sync.reconciler import ReconcilerDep, ReconcileUnavailableError

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(require_admin_key)])


class ReconcileRequest(BaseModel):
    account: str = Field(
        "", pattern=r"^(acct_[A-Za-z0-9]+)?$", description="Connect account; '' the platform"
    )
    repair: bool = Field(False, description="Store corrective snapshots for every drift")


class DifferenceOut(BaseModel):
    subscription_id: str
    customer_id: str | None
    currency: str
    ledger_mrr: int = Field(description="Minor units")
    stripe_mrr: int = Field(description="Minor units, from Stripe's current object")
    delta: int = Field(description="stripe_mrr − ledger_mrr")
    ledger_status: str | None
    stripe_status: str | None
    repair_event_id: str | None


class ReconcileOut(BaseModel):
    account: str
    as_of: int = Field(description="Unix time the comparison was made at")
    checked: int
    drifted: int
    repaired: int
    unresolved: list[str] = Field(description="Still differing after repair (should be empty)")
    drift_mrr: dict[str, int] = Field(description="Currency → sum of |delta|, minor units")
    differences: list[DifferenceOut]


@router.post(
    "/reconcile",
    summary="Compare each subscription's ledger MRR with Stripe's; repair on request",
    response_model=ReconcileOut,
    responses={
        401: {"model": ErrorResponse},
        502: {"model": ErrorResponse, "description": "Stripe refused or failed"},
        503: {"model": ErrorResponse, "description": "STRIPE_API_KEY is not configured"},
    },
)
def post_reconcile(
    body: ReconcileRequest, session: SessionDep, settings: SettingsDep, reconcile: ReconcilerDep
) -> ReconcileOut:
    try:
        report = reconcile(session, settings, account=body.account, repair=body.repair)
    except ReconcileUnavailableError as exc:
        raise ApiError(503, "stripe_not_configured", str(exc)) from None
    except stripe.StripeError as exc:
        # Stripe's message, never its request: it may echo the key's prefix.
        raise ApiError(502, "stripe_error", f"{type(exc).__name__}: {exc.user_message}") from None
    return ReconcileOut.model_validate(report)
