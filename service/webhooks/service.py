"""Rules of the event store: what is stored, and what counts as a duplicate."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from service.kit.telemetry import Telemetry
from service.webhooks.dependencies import VerifiedEvent
from service.webhooks.models import EventSource
from service.webhooks.repository import StripeEventRepository
from service.webhooks.schemas import (
    DeadLetterOut,
    DeadLettersOut,
    StripeEventEnvelope,
    WebhookAck,
)
from service.webhooks.writer import Writer

log = logging.getLogger("churn_ledger.webhooks")


@dataclass(frozen=True, slots=True)
class StoreResult:
    row_id: int | None
    duplicate: bool


def event_row(
    payload: bytes,
    envelope: StripeEventEnvelope,
    *,
    source: EventSource = EventSource.webhook,
    received_at: datetime | None = None,
) -> dict[str, Any]:
    """The stored row of an event: its body as received, and what routes it."""
    return {
        "account": envelope.account or "",
        "event_id": envelope.id,
        "type": envelope.type,
        "api_version": envelope.api_version,
        "livemode": envelope.livemode,
        "created": envelope.created,
        "object_type": envelope.object_type,
        "object_id": envelope.object_id,
        "customer_id": envelope.customer_id,
        "source": source,
        "body": payload,
        "received_at": received_at or datetime.now(UTC),
    }


def store_event(
    session: Session,
    payload: bytes,
    envelope: StripeEventEnvelope,
    *,
    source: EventSource = EventSource.webhook,
    received_at: datetime | None = None,
) -> StoreResult:
    """Add the event to the store (flush only: the caller's edge commits)."""
    row = event_row(payload, envelope, source=source, received_at=received_at)
    row_id = StripeEventRepository(session).insert_if_new(row)
    return StoreResult(row_id=row_id, duplicate=row_id is None)


async def receive_event(
    writer: Writer, payload: bytes, envelope: StripeEventEnvelope
) -> StoreResult:
    """Store a webhook's event; returns once it is committed (the writer's edge)."""
    row_id = await writer.store(event_row(payload, envelope))
    return StoreResult(row_id=row_id, duplicate=row_id is None)


# The two possible answers, rendered once: this is the hottest route.
ACK_BODY = {
    duplicate: WebhookAck(received=True, duplicate=duplicate).model_dump_json().encode()
    for duplicate in (False, True)
}


async def accept_webhook(
    writer: Writer,
    event: VerifiedEvent,
    telemetry: Telemetry,
    stored_hooks: Iterable[Callable[[], None]],
) -> bytes:
    """A verified webhook stored and committed, counted, logged, and the hooks told
    (the projector wakes up); the answer's body. A database failure raises (503)."""
    envelope = event.envelope
    result = await receive_event(writer, event.payload, envelope)
    outcome = "duplicate" if result.duplicate else "stored"
    telemetry.labelled(telemetry.webhook_events, envelope.type, outcome).inc()
    if log.isEnabledFor(logging.INFO):
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
    if not result.duplicate:
        for hook in stored_hooks:
            hook()
    return ACK_BODY[result.duplicate]


def dead_letters(session: Session, account: str | None, limit: int) -> DeadLettersOut:
    repo = StripeEventRepository(session)
    counts = repo.count_dead()
    total = sum(counts.values()) if account is None else counts.get(account, 0)
    rows = repo.dead_letters(account, limit)
    return DeadLettersOut(
        total=total,
        data=[
            DeadLetterOut(
                account=r.account,
                customer_id=r.customer_id,
                event_id=r.event_id,
                type=r.type,
                created=r.created,
                attempts=r.attempts,
                reason=r.last_error,
                dead_at=r.dead_at,
            )
            for r in rows
        ],
    )


def replay_dead_letters(
    session: Session, account: str | None = None, event_id: str | None = None
) -> int:
    """Back on the queue with fresh attempts (flush only); how many."""
    return StripeEventRepository(session).requeue_dead(account, event_id)
