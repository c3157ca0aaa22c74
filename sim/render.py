"""Stripe JSON for the simulator's objects, field for field after Stripe's API reference.

Two shapes (design §2):

* ``current`` (2025-03-31.basil): `current_period_*` on each item, `discounts` as bare ids
  (the discount objects come in `customer.discount.*` events), invoices name their
  subscription under `parent.subscription_details`, lines carry `parent` and `pricing`.
* ``legacy`` (2024-06-20): `current_period_*` on the subscription, singular embedded
  `discount` besides the `discounts` id list, `plan`/`quantity` on single-item
  subscriptions, `invoice.subscription`, lines with `price`/`plan`/`subscription_item`.

Sharing. Prices, plans and coupons never change in Stripe, and every item of every event
carries them; they are rendered once per `Renderer` and shared, as are the constant parts
(`automatic_tax`, `payment_settings`, ...): 10k customers' events are several hundred MB
of dicts as it is. Everything that can differ between events is built fresh per event. So:
treat events as read-only, and `copy.deepcopy` one before editing it.
"""

from __future__ import annotations

from typing import Any

from sim.model import (
    Coupon,
    Customer,
    Discount,
    Invoice,
    Item,
    Line,
    Price,
    Shape,
    Subscription,
)

# Constant parts of every payload, shared like the catalog (see the module docstring).
_NO_AUTOMATIC_TAX: dict[str, Any] = {"disabled_reason": None, "enabled": False, "liability": None}
_SUBSCRIPTION_INVOICE_SETTINGS: dict[str, Any] = {
    "account_tax_ids": None,
    "issuer": {"type": "self"},
}
_PAYMENT_SETTINGS: dict[str, Any] = {
    "payment_method_options": None,
    "payment_method_types": None,
    "save_default_payment_method": "off",
}
_TRIAL_SETTINGS: dict[str, Any] = {"end_behavior": {"missing_payment_method": "create_invoice"}}
_NO_PRORATION: dict[str, Any] = {"credited_items": None}


def _percent(coupon: Coupon) -> float | None:
    # Stripe sends percent_off as a JSON number (20.0, 12.5); readers are expected to parse
    # it through its decimal digits, and the catalog's percentages are exact in binary.
    return None if coupon.percent_off is None else float(coupon.percent_off)


def _price_json(price: Price) -> dict[str, Any]:
    return {
        "id": price.id,
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": price.created,
        "currency": price.currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": None,
        "metadata": {},
        "nickname": price.nickname,
        "product": price.product,
        "recurring": {
            "aggregate_usage": None,
            "interval": price.interval,
            "interval_count": price.interval_count,
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        },
        "tax_behavior": "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring",
        "unit_amount": price.unit_amount,
        "unit_amount_decimal": str(price.unit_amount),
    }


def _plan_json(price: Price) -> dict[str, Any]:
    """The `plan` Stripe still derives from a price, with the recurring fields flat."""
    return {
        "id": price.id,
        "object": "plan",
        "active": True,
        "aggregate_usage": None,
        "amount": price.unit_amount,
        "amount_decimal": str(price.unit_amount),
        "billing_scheme": "per_unit",
        "created": price.created,
        "currency": price.currency,
        "interval": price.interval,
        "interval_count": price.interval_count,
        "livemode": False,
        "metadata": {},
        "meter": None,
        "nickname": price.nickname,
        "product": price.product,
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }


def _coupon_json(coupon: Coupon) -> dict[str, Any]:
    return {
        "id": coupon.id,
        "object": "coupon",
        "amount_off": coupon.amount_off,
        "created": coupon.created,
        "currency": coupon.currency,
        "duration": coupon.duration,
        "duration_in_months": coupon.duration_in_months,
        "livemode": False,
        "max_redemptions": None,
        "metadata": {},
        "name": coupon.name,
        "percent_off": _percent(coupon),
        "redeem_by": None,
        "times_redeemed": 1,
        "valid": True,
    }


class Renderer:
    """Stripe JSON of one account's objects in one shape, sharing immutable catalog dicts."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self._prices: dict[str, dict[str, Any]] = {}
        self._plans: dict[str, dict[str, Any]] = {}
        self._coupons: dict[str, dict[str, Any]] = {}

    def price(self, price: Price) -> dict[str, Any]:
        cached = self._prices.get(price.id)
        if cached is None:
            cached = self._prices[price.id] = _price_json(price)
        return cached

    def plan(self, price: Price) -> dict[str, Any]:
        cached = self._plans.get(price.id)
        if cached is None:
            cached = self._plans[price.id] = _plan_json(price)
        return cached

    def coupon(self, coupon: Coupon) -> dict[str, Any]:
        cached = self._coupons.get(coupon.id)
        if cached is None:
            cached = self._coupons[coupon.id] = _coupon_json(coupon)
        return cached

    def discount(self, discount: Discount) -> dict[str, Any]:
        # 2025-03-31.basil still puts the coupon at `coupon`; `source.coupon` came later.
        return {
            "id": discount.id,
            "object": "discount",
            "checkout_session": None,
            "coupon": self.coupon(discount.coupon),
            "customer": discount.customer,
            "end": discount.end,
            "invoice": None,
            "invoice_item": None,
            "promotion_code": None,
            "start": discount.start,
            "subscription": discount.subscription,
            "subscription_item": None,
        }

    def customer(self, customer: Customer) -> dict[str, Any]:
        return {
            "id": customer.id,
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": customer.created,
            "currency": customer.currency,
            "default_source": None,
            "delinquent": False,
            "description": None,
            "discount": None,
            "email": customer.email,
            "invoice_prefix": customer.invoice_prefix,
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": customer.payment_method,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": False,
            "metadata": dict(customer.metadata),
            "name": customer.name,
            "next_invoice_sequence": customer.invoices + 1,
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }

    def _item(self, item: Item, sub: Subscription) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "id": item.id,
            "object": "subscription_item",
            "billing_thresholds": None,
            "created": item.created,
            "discounts": [],
            "metadata": {},
            "plan": self.plan(item.price),
            "price": self.price(item.price),
            "quantity": item.quantity,
            "subscription": sub.id,
            "tax_rates": [],
        }
        if self.shape == "current":
            payload["current_period_end"] = sub.current_period_end
            payload["current_period_start"] = sub.current_period_start
        return payload

    def items(self, sub: Subscription) -> dict[str, Any]:
        data = [self._item(item, sub) for item in sub.items]
        return {
            "object": "list",
            "data": data,
            "has_more": False,
            "total_count": len(data),
            "url": f"/v1/subscription_items?subscription={sub.id}",
        }

    def subscription(self, sub: Subscription) -> dict[str, Any]:
        # One literal, shape-specific fields appended: JSON objects are unordered, and
        # building it in one go is measurably faster over 100k events.
        discount = sub.discount
        payload: dict[str, Any] = {
            "id": sub.id,
            "object": "subscription",
            "application": None,
            "application_fee_percent": None,
            "automatic_tax": _NO_AUTOMATIC_TAX,
            "billing_cycle_anchor": sub.billing_cycle_anchor,
            "billing_cycle_anchor_config": None,
            "billing_thresholds": None,
            "cancel_at": sub.cancel_at,
            "cancel_at_period_end": sub.cancel_at_period_end,
            "canceled_at": sub.canceled_at,
            "cancellation_details": dict(sub.cancellation_details),
            "collection_method": "charge_automatically",
            "created": sub.created,
            "currency": sub.currency,
            "customer": sub.customer.id,
            "days_until_due": None,
            "default_payment_method": sub.customer.payment_method,
            "default_source": None,
            "default_tax_rates": [],
            "description": None,
            "discounts": [discount.id] if discount else [],
            "ended_at": sub.ended_at,
            "invoice_settings": _SUBSCRIPTION_INVOICE_SETTINGS,
            "items": self.items(sub),
            "latest_invoice": sub.latest_invoice,
            "livemode": False,
            "metadata": dict(sub.metadata),
            "next_pending_invoice_item_invoice": None,
            "on_behalf_of": None,
            "pause_collection": None,
            "payment_settings": _PAYMENT_SETTINGS,
            "pending_invoice_item_interval": None,
            "pending_setup_intent": None,
            "pending_update": None,
            "schedule": None,
            "start_date": sub.created,
            "status": sub.status,
            "test_clock": None,
            "transfer_data": None,
            "trial_end": sub.trial_end,
            "trial_settings": _TRIAL_SETTINGS,
            "trial_start": sub.trial_start,
        }
        if self.shape == "legacy":
            single = sub.items[0] if len(sub.items) == 1 else None
            payload["current_period_end"] = sub.current_period_end
            payload["current_period_start"] = sub.current_period_start
            payload["discount"] = self.discount(discount) if discount else None
            # Deprecated mirrors of the only item; null once a subscription has several.
            payload["plan"] = self.plan(single.price) if single else None
            payload["quantity"] = single.quantity if single else None
        return payload

    def _line(self, line: Line, invoice: Invoice) -> dict[str, Any]:
        period = {"end": invoice.period_end, "start": invoice.period_start}
        description = f"{line.quantity} × {line.price.nickname or line.price.product}"
        if self.shape == "legacy":
            return {
                "id": line.id,
                "object": "line_item",
                "amount": line.amount,
                "amount_excluding_tax": line.amount,
                "currency": invoice.currency,
                "description": description,
                "discount_amounts": [],
                "discountable": True,
                "discounts": [],
                "invoice": invoice.id,
                "livemode": False,
                "metadata": {},
                "period": period,
                "plan": self.plan(line.price),
                "price": self.price(line.price),
                "proration": False,
                "proration_details": _NO_PRORATION,
                "quantity": line.quantity,
                "subscription": invoice.subscription,
                "subscription_item": line.item_id,
                "tax_amounts": [],
                "tax_rates": [],
                "type": "subscription",
                "unit_amount_excluding_tax": str(line.price.unit_amount),
            }
        return {
            "id": line.id,
            "object": "line_item",
            "amount": line.amount,
            "currency": invoice.currency,
            "description": description,
            "discount_amounts": [],
            "discountable": True,
            "discounts": [],
            "invoice": invoice.id,
            "livemode": False,
            "metadata": {},
            "parent": {
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": _NO_PRORATION,
                    "subscription": invoice.subscription,
                    "subscription_item": line.item_id,
                },
                "type": "subscription_item_details",
            },
            "period": period,
            "pretax_credit_amounts": [],
            "pricing": {
                "price_details": {"price": line.price.id, "product": line.price.product},
                "type": "price_details",
                "unit_amount_decimal": str(line.price.unit_amount),
            },
            "quantity": line.quantity,
            "taxes": [],
        }

    def invoice(self, invoice: Invoice, sub: Subscription) -> dict[str, Any]:
        paid = invoice.status == "paid"
        lines = [self._line(line, invoice) for line in invoice.lines]
        discount = invoice.discount if invoice.discount_amount else None
        payload: dict[str, Any] = {
            "id": invoice.id,
            "object": "invoice",
            "account_country": "US",
            "account_name": "Simulated Account",
            "amount_due": invoice.total,
            "amount_overpaid": 0,
            "amount_paid": invoice.total if paid else 0,
            "amount_remaining": 0 if paid else invoice.total,
            "amount_shipping": 0,
            "attempt_count": invoice.attempt_count,
            "attempted": invoice.attempt_count > 0,
            "auto_advance": not paid,
            "automatic_tax": _NO_AUTOMATIC_TAX,
            "billing_reason": invoice.billing_reason,
            "collection_method": "charge_automatically",
            "created": invoice.created,
            "currency": invoice.currency,
            "customer": invoice.customer,
            "customer_email": sub.customer.email,
            "customer_name": sub.customer.name,
            "default_payment_method": None,
            "description": None,
            "discounts": [discount.id] if discount else [],
            "due_date": None,
            "ending_balance": 0,
            "hosted_invoice_url": None,
            "invoice_pdf": None,
            "lines": {
                "object": "list",
                "data": lines,
                "has_more": False,
                "total_count": len(lines),
                "url": f"/v1/invoices/{invoice.id}/lines",
            },
            "livemode": False,
            "metadata": {},
            "next_payment_attempt": invoice.next_payment_attempt,
            "number": invoice.number,
            "period_end": invoice.period_end,
            "period_start": invoice.period_start,
            "starting_balance": 0,
            "status": invoice.status,
            "status_transitions": {
                "finalized_at": invoice.created,
                "marked_uncollectible_at": None,
                "paid_at": invoice.paid_at,
                "voided_at": None,
            },
            "subtotal": invoice.subtotal,
            "subtotal_excluding_tax": invoice.subtotal,
            "test_clock": None,
            "total": invoice.total,
            "total_discount_amounts": (
                [{"amount": invoice.discount_amount, "discount": discount.id}] if discount else []
            ),
            "total_excluding_tax": invoice.total,
            "webhooks_delivered_at": invoice.created,
        }
        if self.shape == "legacy":
            payload["discount"] = self.discount(discount) if discount else None
            payload["paid"] = paid
            payload["paid_out_of_band"] = False
            payload["subscription"] = sub.id
            payload["subscription_details"] = {"metadata": dict(sub.metadata)}
        else:
            payload["parent"] = {
                "quote_details": None,
                "subscription_details": {
                    "metadata": dict(sub.metadata),
                    "subscription": sub.id,
                    "subscription_proration_date": None,
                },
                "type": "subscription_details",
            }
        return payload
