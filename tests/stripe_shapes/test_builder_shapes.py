"""Our payload builders against Stripe's recordings of the same API version.

Every key path a builder emits must exist in the recording of its version with a JSON
type the recording has there (see keypaths.py for what counts). What differs and is
understood is listed in the case's `known`, with the reason; anything else fails, and so
does a known difference that went away (then drop it from `known`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.factories import (
    coupon_payload,
    discount_payload,
    price_payload,
    subscription_payload,
)
from tests.payments.factories import (
    charge_failed_payload,
    invoice_payload,
    invoice_payment,
    payment_intent_failed_payload,
)
from tests.stripe_shapes import recordings
from tests.stripe_shapes.keypaths import Difference, null_paths, shape_differences

# Nullable in Stripe's API reference (docs.stripe.com/api/<object>/object) although the
# recordings happen to hold a value there. Paths that some recording has as null need no
# entry: `null_paths` picks them up.
DOCUMENTED_NULLABLE = {
    # subscription
    "cancel_at",
    "canceled_at",
    "ended_at",
    "trial_end",
    "trial_start",
    "pause_collection",
    "automatic_tax.liability",
    # invoice
    "due_date",
    "next_payment_attempt",
    "parent.quote_details",
    # plan (null in legacy/plan.json, an object in the current item's generated plan)
    "items.data[].plan.transform_usage",
    "plan.transform_usage",
    # coupon (also embedded in a discount)
    "currency",
    "duration_in_months",
    "name",
    "redeem_by",
    "coupon.currency",
    "coupon.duration_in_months",
    "coupon.name",
    # discount
    "end",
}

# Fields Stripe sends as an id or, expanded, as the object.
EXPANDABLE = {"discounts[]", "items.data[].discounts[]", "customer", "product"}

LATER = "added to Stripe after this March 2023 recording (present in current/)"
BUILDER_ONLY = "in neither recording (reported; kept: no reader uses it)"


@dataclass(frozen=True)
class Case:
    name: str
    version: recordings.Version
    build: Callable[[], Any]
    recording: Callable[[], Any]
    # path -> why the difference is expected; "path/**" covers the path and all under it
    known: dict[str, str]

    def __str__(self) -> str:
        return f"{self.version}-{self.name}"


def _legacy_sub() -> dict[str, Any]:
    return subscription_payload(shape="legacy", discounts=[discount_payload()])


def _current_sub(**kwargs: Any) -> dict[str, Any]:
    return subscription_payload(
        shape="current", discounts=[discount_payload(coupon_at="source")], **kwargs
    )


def _rec(version: recordings.Version, name: str, pick: Callable[[Any], Any] = lambda x: x):
    return lambda: pick(recordings.load(version, name))


def _item(payload: dict[str, Any]) -> dict[str, Any]:
    return payload["items"]["data"][0]


CASES = [
    # ---- legacy (recordings: API 2022-11-15, March 2023) ----
    Case(
        "subscription",
        "legacy",
        _legacy_sub,
        _rec("legacy", "subscription"),
        {
            "automatic_tax.liability": LATER,
            "discounts": "subscription.discounts (the id list beside `discount`) " + LATER,
            "discounts[]": "same",
            "items.data[].discounts": "item-level discounts " + LATER,
            # fixtures3 leaves out the deprecated item `plan`; the current recording has
            # it and plan.json checks its shape (legacy-item-plan).
            "items.data[].plan/**": "fixtures3 omits the item's deprecated `plan`",
            "items.data[].price.recurring.meter": LATER,
            "items.data[].price.recurring.trial_period_days": LATER,
            "items.total_count": BUILDER_ONLY,
        },
    ),
    Case(
        "discount",
        "legacy",
        lambda: _legacy_sub()["discount"],
        _rec("legacy", "discount"),
        {"subscription_item": LATER},
    ),
    Case(
        "item",
        "legacy",
        lambda: {k: v for k, v in _item(_legacy_sub()).items() if k != "plan"},
        _rec("legacy", "subscription_item"),
        {
            "discounts": "item-level discounts " + LATER,
            "price.recurring.meter": LATER,
            "price.recurring.trial_period_days": LATER,
        },
    ),
    Case(
        "item-plan",
        "legacy",
        lambda: _item(_legacy_sub())["plan"],
        _rec("legacy", "plan"),
        {"meter": LATER},
    ),
    Case(
        "price",
        "legacy",
        price_payload,
        _rec("legacy", "price"),
        {"recurring.meter": LATER, "recurring.trial_period_days": LATER},
    ),
    Case(
        "coupon", "legacy", lambda: coupon_payload(percent_off=20.0), _rec("legacy", "coupon"), {}
    ),
    Case(
        "invoice",
        "legacy",
        lambda: invoice_payload(shape="legacy", charge="ch_1", payment_intent="pi_1"),
        _rec("legacy", "invoice"),
        {},
    ),
    Case(
        "charge",
        "legacy",
        lambda: charge_failed_payload(shape="legacy"),
        _rec("legacy", "charge"),
        {},  # the recording's `outcome` is null: nothing under it can be checked
    ),
    Case(
        "payment-intent",
        "legacy",
        lambda: payment_intent_failed_payload(shape="legacy"),
        _rec("legacy", "payment_intent"),
        {},  # `last_payment_error` is null there; the 2018 recording checks it (below)
    ),
    Case(
        "payment-error",
        "legacy",
        lambda: payment_intent_failed_payload(shape="legacy")["last_payment_error"],
        _rec("legacy", "payment_intent_payment_failed", lambda pi: pi["last_payment_error"]),
        {},
    ),
    # ---- current (basil-era recordings regenerated by Stripe from the spec) ----
    Case(
        "subscription",
        "current",
        _current_sub,
        _rec("current", "subscription"),
        {
            "items.total_count": BUILDER_ONLY,
        },
    ),
    Case(
        "discount",
        "current",
        lambda: _current_sub(expand_discounts=True)["discounts"][0],
        _rec("current", "discount"),
        {},  # the recording's `source.coupon` is null: the coupon is checked on its own
    ),
    Case(
        "item",
        "current",
        lambda: _item(_current_sub()),
        _rec("current", "subscription_item"),
        {},
    ),
    Case("price", "current", price_payload, _rec("current", "price"), {}),
    Case(
        "coupon", "current", lambda: coupon_payload(percent_off=20.0), _rec("current", "coupon"), {}
    ),
    Case(
        "invoice",
        "current",
        lambda: invoice_payload(shape="current"),
        _rec("current", "invoice"),
        {},
    ),
    Case(
        "invoice-payment",
        "current",
        invoice_payment,
        _rec("current", "invoice_payment"),
        {"payment.payment_intent": "generated recording keeps only the required `type`"},
    ),
    Case(
        "charge",
        "current",
        lambda: charge_failed_payload(shape="current"),
        _rec("current", "charge"),
        {"outcome.risk_level": "optional (Radar); the generated outcome has required fields only"},
    ),
    Case(
        "payment-intent",
        "current",
        lambda: payment_intent_failed_payload(shape="current"),
        _rec("current", "payment_intent"),
        {
            f"last_payment_error.{k}": "generated recording keeps only the required `type`"
            for k in ("charge", "code", "decline_code", "doc_url", "message")
        },
    ),
]


def differences(case: Case) -> list[Difference]:
    recorded = case.recording()
    nullable = DOCUMENTED_NULLABLE | _cross_version_nulls(case)
    return shape_differences(case.build(), recorded, nullable=nullable, expandable=EXPANDABLE)


def _cross_version_nulls(case: Case) -> set[str]:
    """Paths null in this case's recording or in its twin recording of the other version."""
    twins = [c for c in CASES if c.name == case.name]
    return set().union(*(null_paths(c.recording()) for c in twins))


def _covers(known: str, path: str) -> bool:
    if known.endswith("/**"):
        root = known.removesuffix("/**")
        return path == root or path.startswith((f"{root}.", f"{root}[]"))
    return path == known


@pytest.mark.parametrize("case", CASES, ids=str)
def test_builder_matches_recording(case: Case) -> None:
    found = {d.path: str(d) for d in differences(case)}
    unexpected = {p: s for p, s in found.items() if not any(_covers(k, p) for k in case.known)}
    gone = sorted(k for k in case.known if not any(_covers(k, p) for p in found))
    assert not unexpected, "builder differs from Stripe's recording:\n" + "\n".join(
        unexpected.values()
    )
    assert not gone, f"known differences no longer found (drop them from `known`): {gone}"


# Fields 2025-03-31.basil removed: absent from the current recording and from our builders.
REMOVED_IN_BASIL = [
    ("subscription", _current_sub, ["current_period_start", "current_period_end", "discount"]),
    ("invoice", lambda: invoice_payload(shape="current"), ["charge", "payment_intent", "paid"]),
    ("charge", lambda: charge_failed_payload(shape="current"), ["invoice"]),
    ("payment_intent", lambda: payment_intent_failed_payload(shape="current"), ["invoice"]),
]


@pytest.mark.parametrize(
    ("name", "build", "removed"), REMOVED_IN_BASIL, ids=[r[0] for r in REMOVED_IN_BASIL]
)
def test_fields_removed_in_basil_are_absent(name, build, removed) -> None:
    recorded, built = recordings.load("current", name), build()
    assert [k for k in removed if k in recorded] == []
    assert [k for k in removed if k in built] == []
    # ... and the legacy recording of the same object still has them.
    assert [k for k in removed if k not in recordings.load("legacy", name)] == []
