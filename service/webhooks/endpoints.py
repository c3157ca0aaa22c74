"""POST /webhooks/stripe."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from service.db import SessionDep
from service.kit.auth import AdminKeyDep
from service.kit.deps import TelemetryDep
from service.kit.errors import ErrorResponse
from service.kit.params import PRINTABLE
from service.webhooks.dependencies import EventWriterDep, VerifiedEventDep
from service.webhooks.schemas import DeadLettersOut, WebhookAck
from service.webhooks.service import accept_webhook, dead_letters

router = APIRouter(tags=["webhooks"])
admin_router = APIRouter(
    prefix="/v1/admin",
    tags=["admin"],
    responses={401: {"model": ErrorResponse}, 403: {"model": ErrorResponse}},
)


@router.post(
    "/webhooks/stripe",
    response_model=WebhookAck,
    summary="Receive a Stripe webhook event",
    description=(
        "Verifies `Stripe-Signature` over the raw body, stores the event exactly as "
        "received and commits before answering. Duplicates answer 200 with "
        "`duplicate: true`. Stripe retries anything that is not 2xx."
    ),
    responses={
        400: {"model": ErrorResponse, "description": "Bad signature, stale or not an event"},
        413: {"model": ErrorResponse, "description": "Body over MAX_BODY_BYTES"},
        503: {"model": ErrorResponse, "description": "Database unavailable; retry"},
    },
)
async def receive_stripe_webhook(
    request: Request, event: VerifiedEventDep, writer: EventWriterDep, telemetry: TelemetryDep
) -> Response:
    # Served by the ASGI fast path (service/webhooks/fastpath.py) in the app: this route
    # documents it in the OpenAPI spec and answers alike where the fast path is off.
    body = await accept_webhook(writer, event, telemetry, request.app.state.event_stored_hooks)
    return Response(body, media_type="application/json")


@admin_router.get(
    "/dead-letters",
    response_model=DeadLettersOut,
    summary="Events set aside because their projection kept failing, with the reason",
    description=(
        "An event whose projection failed PROJECTOR_MAX_ATTEMPTS times is left out of its "
        "customer's projection (the customer is projected from its other events). "
        "`churn-ledger dead-letters replay` puts them back on the queue."
    ),
)
def list_dead_letters(
    session: SessionDep,
    _key: AdminKeyDep,
    account: Annotated[
        str | None, Query(max_length=255, pattern=PRINTABLE, description="Only this account")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeadLettersOut:
    return dead_letters(session, account, limit)
