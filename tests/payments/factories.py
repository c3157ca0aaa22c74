"""Invoices, charges and payment intents, field for field after Stripe's API reference.

Two invoice shapes:

* ``legacy`` (before 2025-03-31): `subscription`, `charge`, `payment_intent` and `paid`
  on the invoice; `invoice` on charges and payment intents.
* ``current`` (2025-03-31 basil and later): the subscription under
  `parent.subscription_details.subscription`; no `charge`/`payment_intent`/`paid` on the
  invoice (its `payments` list only when expanded), no `invoice` on charges or intents.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

InvoiceShape = Literal["legacy", "current"]
INVOICE_SHAPES: tuple[InvoiceShape, ...] = ("legacy", "current")


def invoice_payload(
    *,
    shape: InvoiceShape = "current",
    id: str = "in_1",
    customer: str = "cus_1",
    subscription: str | None = "sub_1",
    status: str = "open",
    amount_due: int = 4900,
    amount_paid: int = 0,
    currency: str = "usd",
    attempt_count: int = 1,
    next_payment_attempt: int | None = None,
    billing_reason: str = "subscription_cycle",
    created: int = 0,
    paid_at: int | None = None,
    voided_at: int | None = None,
    marked_uncollectible_at: int | None = None,
    charge: str | None = None,
    payment_intent: str | None = None,
    payments: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": id,
        "object": "invoice",
        "account_country": "US",
        "amount_due": amount_due,
        "amount_paid": amount_paid,
        "amount_remaining": amount_due - amount_paid,
        "attempt_count": attempt_count,
        "attempted": attempt_count > 0,
        "auto_advance": status == "open",
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "created": created,
        "currency": currency,
        "customer": customer,
        "due_date": None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/{id}",
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": next_payment_attempt,
        "number": f"NUM-{id}",
        "period_end": created,
        "period_start": created,
        "status": status,
        "status_transitions": {
            "finalized_at": created,
            "marked_uncollectible_at": marked_uncollectible_at,
            "paid_at": paid_at,
            "voided_at": voided_at,
        },
        "subtotal": amount_due,
        "total": amount_due,
    }
    if shape == "legacy":
        payload |= {
            "subscription": subscription,
            "charge": charge,
            "payment_intent": payment_intent,
            "paid": status == "paid",
            "paid_out_of_band": False,
        }
    else:
        payload["parent"] = (
            {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"metadata": {}, "subscription": subscription},
            }
            if subscription
            else None
        )
        if payments is not None:  # includable: only when expanded (backfill)
            payload["payments"] = {"object": "list", "data": list(payments), "has_more": False}
    return payload


def invoice_payment(
    *, invoice: str = "in_1", payment_intent: str = "pi_1", status: str = "open"
) -> dict[str, Any]:
    return {
        "id": f"inpay_{payment_intent}",
        "object": "invoice_payment",
        "invoice": invoice,
        "is_default": True,
        "payment": {"type": "payment_intent", "payment_intent": payment_intent},
        "status": status,
    }


def charge_failed_payload(
    *,
    shape: InvoiceShape = "current",
    id: str = "ch_1",
    customer: str = "cus_1",
    invoice: str | None = "in_1",
    payment_intent: str | None = "pi_1",
    amount: int = 4900,
    currency: str = "usd",
    created: int = 0,
    failure_code: str = "card_declined",
    decline_code: str | None = "insufficient_funds",
    message: str = "Your card has insufficient funds.",
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": id,
        "object": "charge",
        "amount": amount,
        "amount_captured": 0,
        "captured": False,
        "created": created,
        "currency": currency,
        "customer": customer,
        "failure_code": failure_code,
        "failure_message": message,
        "livemode": False,
        "outcome": {
            "network_status": "declined_by_network",
            "reason": decline_code,
            "risk_level": "normal",
            "seller_message": f"The bank returned the decline code `{decline_code}`.",
            "type": "issuer_declined",
        },
        "paid": False,
        "payment_intent": payment_intent,
        "status": "failed",
    }
    if shape == "legacy":
        payload["invoice"] = invoice
    return payload


def payment_intent_failed_payload(
    *,
    shape: InvoiceShape = "current",
    id: str = "pi_1",
    customer: str = "cus_1",
    invoice: str | None = "in_1",
    charge: str | None = "ch_1",
    amount: int = 4900,
    currency: str = "usd",
    created: int = 0,
    decline_code: str | None = "insufficient_funds",
    message: str = "Your card has insufficient funds.",
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": id,
        "object": "payment_intent",
        "amount": amount,
        "created": created,
        "currency": currency,
        "customer": customer,
        "last_payment_error": {
            "charge": charge,
            "code": "card_declined",
            "decline_code": decline_code,
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "message": message,
            "type": "card_error",
        },
        "latest_charge": charge,
        "livemode": False,
        "status": "requires_payment_method",
    }
    if shape == "legacy":
        payload["invoice"] = invoice
    return payload
