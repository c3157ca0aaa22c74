"""Invoices of any API version, read defensively.

Shapes seen in the wild (design §2):

* before 2025-03-31: `invoice.subscription`, and the invoice names its `charge` and
  `payment_intent`;
* 2025-03-31 (basil) and later: `invoice.parent.subscription_details.subscription`; the
  links between invoices and payments moved to `invoice.payments` (an includable list,
  absent from webhooks unless expanded).

Their failed charges and payment intents are read in `service.stripe_shapes.charge`.

Absent, `null` and expanded-object forms all occur; nothing here raises on them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.stripe_shapes.fields import (
    as_mapping,
    expandable_id,
    get_bool,
    get_int,
    get_str,
    list_data,
    lower_currency,
)


@dataclass(frozen=True, slots=True)
class InvoiceSnapshot:
    id: str | None
    subscription: str | None
    status: str | None  # draft | open | paid | uncollectible | void
    paid: bool  # status paid, or the pre-basil `paid` flag
    amount_due: int | None
    amount_remaining: int | None
    currency: str | None
    attempt_count: int | None
    next_payment_attempt: int | None
    billing_reason: str | None
    charge_ids: tuple[str, ...]
    payment_intent_ids: tuple[str, ...]
    paid_at: int | None
    voided_at: int | None
    marked_uncollectible_at: int | None


def invoice_subscription(invoice: Mapping[str, Any]) -> str | None:
    """The subscription an invoice bills for, in either API shape (id or expanded object).

    2025-03-31 (basil) replaced `invoice.subscription` by
    `invoice.parent.subscription_details.subscription`, so one payload carries one of them.
    Should one carry both, the current field wins: it is the one Stripe's API reference
    defines, the top-level field being the deprecated one (invoice lines read alike:
    `line.parent.subscription_item_details` before `line.subscription`, invoice_lines.py).
    """
    details = as_mapping(as_mapping(invoice.get("parent")).get("subscription_details"))
    found = expandable_id(details.get("subscription"))
    return found if found is not None else expandable_id(invoice.get("subscription"))


def _payment_links(obj: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    charges = [expandable_id(obj.get("charge"))]
    intents = [expandable_id(obj.get("payment_intent"))]
    for invoice_payment in list_data(obj.get("payments")):
        payment = as_mapping(as_mapping(invoice_payment).get("payment"))
        charges.append(expandable_id(payment.get("charge")))
        intents.append(expandable_id(payment.get("payment_intent")))
    return (
        tuple(sorted({c for c in charges if c})),
        tuple(sorted({i for i in intents if i})),
    )


def read_invoice(obj: Mapping[str, Any]) -> InvoiceSnapshot:
    transitions = as_mapping(obj.get("status_transitions"))
    status = get_str(obj, "status")
    charges, intents = _payment_links(obj)
    return InvoiceSnapshot(
        id=get_str(obj, "id"),
        subscription=invoice_subscription(obj),
        status=status,
        paid=status == "paid" or get_bool(obj, "paid"),
        amount_due=get_int(obj, "amount_due"),
        amount_remaining=get_int(obj, "amount_remaining"),
        currency=lower_currency(obj.get("currency")),
        attempt_count=get_int(obj, "attempt_count"),
        next_payment_attempt=get_int(obj, "next_payment_attempt"),
        billing_reason=get_str(obj, "billing_reason"),
        charge_ids=charges,
        payment_intent_ids=intents,
        paid_at=get_int(transitions, "paid_at"),
        voided_at=get_int(transitions, "voided_at"),
        marked_uncollectible_at=get_int(transitions, "marked_uncollectible_at"),
    )
