"""Invoices of any API version, read as what each one billed for which subscription item.

Two line shapes (design §2):

* before 2025-03-31: `line.subscription`, `line.subscription_item`, `line.proration`,
  `line.price` (and older `line.plan`) embedded as objects;
* 2025-03-31 and later: `line.parent.subscription_item_details` (or, for proration invoice
  items, `line.parent.invoice_item_details`) holds subscription, item and proration;
  the price is `line.pricing.price_details.price`, an id unless expanded.

Where both shapes' fields are present, the current one wins. Invoices name their
subscription at `invoice.subscription` (old) or
`invoice.parent.subscription_details.subscription` (new): `invoice.invoice_subscription`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service.stripe_shapes.fields import as_mapping, expandable_id, get_int, get_str, list_data
from service.stripe_shapes.invoice import invoice_subscription


@dataclass(frozen=True, slots=True)
class BilledLine:
    """One subscription line: item `key` had `price` × `quantity` over [start, end)."""

    subscription: str | None
    key: str  # the subscription item id; "price:<id>" when the line does not name one
    price_id: str | None
    price: Mapping[str, Any] | None  # the price (or plan) object when the line embeds it
    quantity: int | None
    start: int
    end: int
    proration: bool
    # The "unused time" side of a proration: it credits the state that ended at `start`.
    credit: bool


def _parent_details(line: Mapping[str, Any]) -> Mapping[str, Any] | None:
    parent = as_mapping(line.get("parent"))
    kind = parent.get("type")
    if kind in ("subscription_item_details", "invoice_item_details"):
        return as_mapping(parent.get(kind))
    return None


def _price_ref(line: Mapping[str, Any]) -> Any:
    for key in ("price", "plan"):
        if isinstance(line.get(key), Mapping):
            return line[key]
    details = as_mapping(as_mapping(line.get("pricing")).get("price_details"))
    return details.get("price") or line.get("price") or line.get("plan")


def read_line(line: Mapping[str, Any], invoice_sub: str | None) -> BilledLine | None:
    """A subscription line of an invoice, or None for other lines (one-off items, tax...)."""
    period = as_mapping(line.get("period"))
    start, end = get_int(period, "start"), get_int(period, "end")
    if start is None or end is None:
        return None
    details = _parent_details(line)
    from_invoice_item = line.get("type") == "invoiceitem" or (
        as_mapping(line.get("parent")).get("type") == "invoice_item_details"
    )
    if details is not None:
        subscription = expandable_id(details.get("subscription"))
        item = get_str(details, "subscription_item")
        proration = details.get("proration") is True
        credited = as_mapping(details.get("proration_details")).get("credited_items")
    else:
        if line.get("type") not in ("subscription", "invoiceitem"):
            return None
        subscription = expandable_id(line.get("subscription"))
        if subscription is None and line.get("type") == "subscription":
            subscription = invoice_sub  # very old lines name only the invoice's subscription
        item = get_str(line, "subscription_item")
        proration = line.get("proration") is True
        credited = as_mapping(line.get("proration_details")).get("credited_items")
    if subscription is None or (from_invoice_item and not proration):
        return None  # a one-off invoice item, even when attached to a subscription
    ref = _price_ref(line)
    price_id = expandable_id(ref)
    amount = get_int(line, "amount") or 0
    return BilledLine(
        subscription=subscription,
        key=item or f"price:{price_id}",
        price_id=price_id,
        price=ref if isinstance(ref, Mapping) else None,
        quantity=get_int(line, "quantity"),
        start=start,
        end=end,
        proration=proration,
        credit=proration and (amount < 0 or bool(credited)),
    )


def billed_lines(invoice: Mapping[str, Any]) -> list[BilledLine]:
    sub = invoice_subscription(invoice)
    lines = (read_line(as_mapping(raw), sub) for raw in list_data(invoice.get("lines")))
    return [line for line in lines if line is not None]


def subscription_discounts(invoice: Mapping[str, Any], subscription: str) -> list[dict[str, Any]]:
    """Expanded subscription-level discounts the invoice applied (ids alone say nothing)."""
    found = []
    for raw in list_data(invoice.get("discounts")):
        if not isinstance(raw, Mapping) or raw.get("subscription_item"):
            continue
        if expandable_id(raw.get("subscription")) == subscription:
            found.append(dict(raw))
    return found
