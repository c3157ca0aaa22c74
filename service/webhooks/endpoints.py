"""POST /webhooks/stripe."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Request

from service.db import SessionDep, after_commit
from service.kit.deps import TelemetryDep
from service.kit.errors import ErrorResponse
from service.webhooks.dependencies import VerifiedEventDep
from service.webhooks.schemas import WebhookAck
from service.webhooks.service import store_event

log = logging.getLogger("churn_ledger.webhooks")
router = APIRouter(tags=["webhooks"])


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
def receive_stripe_webhook(
    request: Request, event: VerifiedEventDep, session: SessionDep, telemetry: TelemetryDep
) -> WebhookAck:
    envelope = event.envelope
    result = store_event(session, event.payload, envelope)
    outcome = "duplicate" if result.duplicate else "stored"

    def report() -> None:
        # Only after the commit: a 503 must never be logged or counted as stored.
        telemetry.webhook_events.labels(envelope.type, outcome).inc()
        log.info(
            "webhook",
            extra={
                "fields": {
                    "event_id": envelope.id,
                    "type": envelope.type,
                    "account": envelope.account,
                    "outcome": outcome,
                    "ms": round((time.perf_counter() - event.started) * 1000, 2),
                }
            },
        )

    after_commit(session, report)
    if not result.duplicate:
        for hook in request.app.state.event_stored_hooks:
            after_commit(session, hook)
    return WebhookAck(received=True, duplicate=result.duplicate)
