"""The catalogue of Stripe event types this service reads, and the stored-event view the
projectors work on. The receiver stores every type; only these are ever decoded.

One list for the receiver's documentation, the projectors and backfill: a type read by a
projector but missing here would be fetched by no backfill and documented nowhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

SUBSCRIPTION_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "customer.subscription.pending_update_applied",
        "customer.subscription.pending_update_expired",
    }
)
DISCOUNT_EVENTS = frozenset(
    {"customer.discount.created", "customer.discount.updated", "customer.discount.deleted"}
)
FAILED = "invoice.payment_failed"
PAID_EVENTS = frozenset({"invoice.paid", "invoice.payment_succeeded"})
INVOICE_EVENTS = PAID_EVENTS | {
    FAILED,
    "invoice.payment_action_required",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "invoice.updated",
}
FAILURE_EVENTS = frozenset({"charge.failed", "payment_intent.payment_failed"})
PAYMENT_EVENTS = INVOICE_EVENTS | FAILURE_EVENTS
# What the ledger projector reads; the payment projector adds PAYMENT_EVENTS.
LEDGER_EVENTS = SUBSCRIPTION_EVENTS | DISCOUNT_EVENTS
# Every type some projector reads; the others (customer.created, ...) are never decoded.
READ_EVENTS = LEDGER_EVENTS | PAYMENT_EVENTS


@dataclass(frozen=True, slots=True)
class RawEvent:
    """One stored event as the projectors see it: its `data.object`, parsed."""

    event_id: str
    type: str
    created: int
    obj: Mapping[str, Any]


def decode_object(body: bytes) -> Mapping[str, Any]:
    """`data.object` of a stored event body (validated as an event on receipt)."""
    try:
        return orjson.loads(body)["data"]["object"]
    except orjson.JSONDecodeError:
        # What orjson refuses and the stdlib reads (integers past 64 bits, NaN): the
        # receiver's validation let it in, so projection must read it too.
        return json.loads(body)["data"]["object"]
