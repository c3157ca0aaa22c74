"""The receiver's input as a dependency: size-limited, signature-verified, parsed.

Every rejection is counted here, in one place, before anything touches the database.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from service.kit.auth import SettingsDep
from service.kit.deps import TelemetryDep
from service.kit.telemetry import Telemetry
from service.settings import Settings
from service.webhooks.schemas import EventParseError, StripeEventEnvelope, parse_event
from service.webhooks.signature import WebhookRejected, verify_stripe_signature
from service.webhooks.writer import Writer

log = logging.getLogger("churn_ledger.webhooks")


@dataclass(frozen=True, slots=True)
class VerifiedEvent:
    payload: bytes
    envelope: StripeEventEnvelope
    started: float


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    # Chunked bodies have no Content-Length: count while reading so a huge body is cut
    # off early instead of being buffered whole.
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def verify_event(
    payload: bytes,
    signature: str | None,
    settings: Settings,
    telemetry: Telemetry,
    started: float,
) -> VerifiedEvent:
    """The checks of every webhook, FastAPI's route and the ASGI fast path alike
    (service/webhooks/fastpath.py): signature, then envelope. A rejection is counted and
    logged here and raised (WebhookRejected: its status and JSON error)."""
    try:
        verify_stripe_signature(
            payload,
            signature,
            [s.get_secret_value() for s in settings.stripe_webhook_secrets],
            settings.stripe_webhook_tolerance_s,
        )
        try:
            envelope = parse_event(payload)
        except EventParseError as exc:
            raise WebhookRejected(400, exc.reason, exc.message) from None
    except WebhookRejected as exc:
        count_rejection(exc, telemetry, started)
        raise
    return VerifiedEvent(payload, envelope, started)


def count_rejection(exc: WebhookRejected, telemetry: Telemetry, started: float) -> None:
    telemetry.webhook_rejections.labels(exc.reason).inc()
    # No body, header or secret in the log: only what identifies the failure.
    log.info(
        "webhook",
        extra={
            "fields": {
                "outcome": "rejected",
                "reason": exc.reason,
                "status": exc.status_code,
                "ms": round((time.perf_counter() - started) * 1000, 2),
            }
        },
    )


def too_large(limit: int) -> WebhookRejected:
    return WebhookRejected(413, "body_too_large", f"body exceeds {limit} bytes")


async def verified_stripe_event(
    request: Request, settings: SettingsDep, telemetry: TelemetryDep
) -> VerifiedEvent:
    started = time.perf_counter()
    try:
        payload = await _read_limited(request, settings.max_body_bytes)
    except WebhookRejected as exc:
        count_rejection(exc, telemetry, started)
        raise
    return verify_event(
        payload, request.headers.get("stripe-signature"), settings, telemetry, started
    )


VerifiedEventDep = Annotated[VerifiedEvent, Depends(verified_stripe_event)]


async def get_event_writer(request: Request) -> Writer:
    return request.app.state.event_writer


EventWriterDep = Annotated[Writer, Depends(get_event_writer)]
