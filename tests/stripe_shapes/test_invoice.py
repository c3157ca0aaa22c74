"""Which subscription an invoice (and each of its lines) is for, in both API shapes."""

from __future__ import annotations

from typing import Any

import pytest

from service.stripe_shapes.invoice import invoice_subscription, read_invoice
from service.stripe_shapes.invoice_lines import billed_lines, read_line


def current(sub: Any, **extra: Any) -> dict[str, Any]:
    """2025-03-31 (basil) and later."""
    parent = {"type": "subscription_details", "quote_details": None,
              "subscription_details": {"metadata": {}, "subscription": sub}}  # fmt: skip
    return {"id": "in_1", "object": "invoice", "parent": parent, **extra}


def legacy(sub: Any, **extra: Any) -> dict[str, Any]:
    """Before 2025-03-31: no `parent`."""
    return {"id": "in_1", "object": "invoice", "subscription": sub, **extra}


@pytest.mark.parametrize(
    ("invoice", "expected"),
    [
        (current("sub_new"), "sub_new"),
        (current({"id": "sub_new", "object": "subscription"}), "sub_new"),  # expanded
        (legacy("sub_old"), "sub_old"),
        (legacy({"id": "sub_old", "object": "subscription"}), "sub_old"),
        # Both (no Stripe version sends that): the current field, the deprecated one after.
        (current("sub_new", subscription="sub_old"), "sub_new"),
        (current(None, subscription="sub_old"), "sub_old"),
        ({"id": "in_1", "parent": {"type": "quote_details", "subscription_details": None}}, None),
        (legacy(None), None),
        ({"id": "in_1", "parent": "junk", "subscription": 7}, None),
    ],
)
def test_invoice_subscription(invoice: dict[str, Any], expected: str | None):
    assert invoice_subscription(invoice) == expected
    # The payments projection and the import jobs read it alike.
    assert read_invoice(invoice).subscription == expected


PERIOD = {"start": 1_735_689_600, "end": 1_738_368_000}


def current_line(sub: str, **extra: Any) -> dict[str, Any]:
    details = {"subscription": sub, "subscription_item": "si_1", "proration": False,
               "invoice_item": None, "proration_details": {"credited_items": None}}  # fmt: skip
    return {"id": "il_1", "object": "line_item", "period": PERIOD, "amount": 4900,
            "quantity": 1, "pricing": {"price_details": {"price": "price_49"}},
            "parent": {"type": "subscription_item_details",
                       "subscription_item_details": details}, **extra}  # fmt: skip


def legacy_line(sub: str | None) -> dict[str, Any]:
    return {"id": "il_1", "object": "line_item", "type": "subscription", "period": PERIOD,
            "amount": 4900, "quantity": 1, "subscription": sub, "subscription_item": "si_1",
            "proration": False, "price": {"id": "price_49", "object": "price"}}  # fmt: skip


def test_line_subscription_in_both_shapes():
    for line in (current_line("sub_1"), legacy_line("sub_1")):
        read = read_line(line, None)
        assert read is not None
        assert (read.subscription, read.key, read.price_id) == ("sub_1", "si_1", "price_49")
    # Both (never sent by Stripe): the current field wins, as for invoices.
    both = read_line(current_line("sub_new", subscription="sub_old", type="subscription"), None)
    assert both is not None and both.subscription == "sub_new"


@pytest.mark.parametrize("shape", [current, legacy])
def test_very_old_lines_take_the_invoice_subscription(shape: Any):
    invoice = shape("sub_1", lines={"object": "list", "data": [legacy_line(None)]})
    assert [line.subscription for line in billed_lines(invoice)] == ["sub_1"]
