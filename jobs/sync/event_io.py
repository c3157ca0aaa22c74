"""The import jobs' side of the event store: writing fetched and synthetic events, and
reading back what a subscription's reconstruction needs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from jobs.sync.history import SYNTHETIC_PREFIXES, FirstReal, is_synthetic
from service.stripe_shapes.events import SUBSCRIPTION_EVENTS, RawEvent
from service.stripe_shapes.invoice import invoice_subscription
from service.webhooks.models import EventSource, StripeEvent
from service.webhooks.repository import StripeEventRepository
from service.webhooks.schemas import parse_event
from service.webhooks.service import event_row


def fetched_envelope(event: Mapping[str, Any], account: str) -> dict[str, Any]:
    """An event listed by /v1/events, as Stripe sent it.

    Events listed with `Stripe-Account` may lack `account`; the row must carry it so that a
    later Connect webhook of the same event is the duplicate it is.
    """
    envelope = dict(event)
    if account and not envelope.get("account"):
        envelope["account"] = account
    return envelope


def synthetic_envelope(event: RawEvent, *, account: str, api_version: str | None) -> dict[str, Any]:
    return {
        "id": event.event_id,
        "object": "event",
        "account": account or None,
        "api_version": api_version,
        "created": event.created,
        "data": {"object": event.obj},
        "livemode": bool(event.obj.get("livemode", False)),
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None},
        "type": event.type,
    }


def store_envelopes(
    session: Session, envelopes: Iterable[Mapping[str, Any]], source: EventSource
) -> int:
    """Store events unless already stored; how many were new (flush only).

    The same row as `service.webhooks.service.store_event` writes (`event_row`), and the
    same validation (`parse_event`), but one multi-row INSERT per page: a
    10,000-subscription account is some 100,000 events.
    """
    received_at = datetime.now(UTC)
    rows = []
    for envelope in envelopes:
        body = json.dumps(envelope, separators=(",", ":")).encode()
        rows.append(event_row(body, parse_event(body), source=source, received_at=received_at))
    if not rows:
        return 0
    # The receiver's own multi-row insert: duplicates within the page and already
    # stored events come back as None (first wins, as ON CONFLICT DO NOTHING would).
    ids = StripeEventRepository(session).insert_many_if_new(rows)
    return sum(row_id is not None for row_id in ids)


def first_real_events(
    session: Session, account: str, subscription_ids: Iterable[str]
) -> dict[str, FirstReal]:
    """The earliest stored event Stripe sent (not one of ours) for each subscription."""
    rows = session.execute(
        select(StripeEvent.object_id, StripeEvent.created, StripeEvent.type, StripeEvent.event_id)
        .where(
            StripeEvent.account == account,
            StripeEvent.object_id.in_(list(subscription_ids)),
            StripeEvent.type.in_(SUBSCRIPTION_EVENTS),
        )
        .order_by(StripeEvent.created, StripeEvent.event_id)
    ).all()
    first: dict[str, FirstReal] = {}
    for object_id, created, type_, event_id in rows:
        if object_id is not None and not is_synthetic(event_id) and object_id not in first:
            first[object_id] = FirstReal(created, type_)
    return first


def objects_with_real_events(session: Session, account: str, object_type: str) -> set[str]:
    """Ids of the objects of a type that Stripe itself sent events about (one query per run:
    at most 30 days of events, where a page-by-page IN list would be a query per page)."""
    synthetic = [StripeEvent.event_id.startswith(p, autoescape=True) for p in SYNTHETIC_PREFIXES]
    rows = session.scalars(
        select(StripeEvent.object_id)
        .where(
            StripeEvent.account == account,
            StripeEvent.object_type == object_type,
            ~or_(*synthetic),
        )
        .distinct()
    )
    return {object_id for object_id in rows if object_id is not None}


def stored_invoices(
    session: Session, account: str, customer_ids: Iterable[str]
) -> dict[str, list[dict[str, Any]]]:
    """The newest stored version of each invoice of these customers, by subscription."""
    rows = session.execute(
        select(StripeEvent.created, StripeEvent.event_id, StripeEvent.body)
        .where(
            StripeEvent.account == account,
            StripeEvent.customer_id.in_(list(customer_ids)),
            StripeEvent.object_type == "invoice",
        )
        .order_by(StripeEvent.created, StripeEvent.event_id)
    ).all()
    newest: dict[str, dict[str, Any]] = {}
    for _created, _event_id, body in rows:
        invoice = json.loads(body)["data"]["object"]
        if isinstance(invoice.get("id"), str):  # `invoice.upcoming` previews have none
            newest[invoice["id"]] = invoice  # later rows win
    # A draft's lines may still change (or it may be deleted): nothing was billed yet.
    newest = {k: v for k, v in newest.items() if v.get("status") not in (None, "draft")}
    by_sub: dict[str, list[dict[str, Any]]] = {}
    for invoice in newest.values():
        sub = invoice_subscription(invoice)
        if sub is not None:
            by_sub.setdefault(sub, []).append(invoice)
    return by_sub
