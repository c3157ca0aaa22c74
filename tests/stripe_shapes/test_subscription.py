from decimal import Decimal

import pytest

from service.stripe_shapes import (
    CancellationDetails,
    Tier,
    TransformQuantity,
    read_discount,
    read_price,
    read_subscription,
)
from tests.factories import (
    DAY,
    MONTH,
    SHAPES,
    T0,
    coupon_payload,
    discount_payload,
    item,
    price_payload,
    subscription_payload,
)


class TestShapeDetection:
    @pytest.mark.parametrize(
        ("shape", "expected"),
        [("current", "current"), ("legacy", "legacy"), ("ancient", "legacy")],
    )
    def test_shape_is_told_by_where_current_period_lives(self, shape, expected):
        snap = read_subscription(subscription_payload(shape=shape))
        assert snap.api_shape == expected

    def test_current_shape_still_carrying_plan_is_current(self):
        payload = subscription_payload(shape="current")
        assert "plan" in payload["items"]["data"][0]
        assert read_subscription(payload).api_shape == "current"

    @pytest.mark.parametrize("shape", SHAPES)
    def test_periods_are_read_from_wherever_they_live(self, shape):
        payload = subscription_payload(
            shape=shape, current_period_start=T0, current_period_end=T0 + MONTH
        )
        snap = read_subscription(payload)
        assert (snap.current_period_start, snap.current_period_end) == (T0, T0 + MONTH)

    def test_current_shape_period_spans_all_items(self):
        payload = subscription_payload(items=[item(), item(price_payload(id="price_b"))])
        second = payload["items"]["data"][1]
        second["current_period_start"] = T0 - 5 * DAY
        second["current_period_end"] = T0 + 90 * DAY
        snap = read_subscription(payload)
        assert snap.current_period_start == T0 - 10 * DAY
        assert snap.current_period_end == T0 + 90 * DAY
        assert snap.items[1].current_period_end == T0 + 90 * DAY

    def test_payload_without_periods_but_singular_discount_is_legacy(self):
        assert read_subscription({"id": "sub_1", "discount": None}).api_shape == "legacy"
        assert read_subscription({"id": "sub_1"}).api_shape == "current"


class TestItemsAndPrices:
    @pytest.mark.parametrize("shape", SHAPES)
    def test_price_fields_survive_every_shape(self, shape):
        price = price_payload(
            id="price_team",
            product="prod_team",
            unit_amount=4900,
            interval="year",
            interval_count=2,
            nickname="Team",
        )
        snap = read_subscription(subscription_payload(shape=shape, items=[item(price, 3)]))
        (only,) = snap.items
        assert only.quantity == 3
        assert only.price is not None
        assert only.price.id == "price_team"
        assert only.price.product == "prod_team"
        assert only.price.unit_amount_decimal == Decimal(4900)
        assert (only.price.interval, only.price.interval_count) == ("year", 2)
        assert only.price.usage_type == "licensed"
        assert only.price.nickname == "Team"

    def test_ancient_subscription_takes_currency_from_plan(self):
        payload = subscription_payload(shape="ancient", items=[item(price_payload(currency="EUR"))])
        assert "currency" not in payload
        assert "price" not in payload["items"]["data"][0]
        assert read_subscription(payload).currency == "eur"

    def test_currency_is_lowercased(self):
        assert read_subscription(subscription_payload(currency="USD")).currency == "usd"

    def test_unit_amount_decimal_is_preferred_over_unit_amount(self):
        price = price_payload(unit_amount=12, unit_amount_decimal="12.5")
        assert price["unit_amount"] is None
        assert read_price(price).unit_amount_decimal == Decimal("12.5")
        price["unit_amount"] = 12
        assert read_price(price).unit_amount_decimal == Decimal("12.5")

    @pytest.mark.parametrize("shape", SHAPES)
    def test_tiers_and_transform_are_read_from_price_or_plan(self, shape):
        price = price_payload(
            billing_scheme="tiered",
            tiers_mode="graduated",
            tiers=[
                {"up_to": 5, "unit_amount": 1000, "flat_amount": 500},
                {"up_to": "inf", "unit_amount": 600},
            ],
        )
        snap = read_subscription(subscription_payload(shape=shape, items=[item(price)]))
        read = snap.items[0].price
        assert read is not None
        assert read.billing_scheme == "tiered"
        assert read.tiers_mode == "graduated"
        assert read.tiers == (
            Tier(up_to=5, unit_amount_decimal=Decimal(1000), flat_amount_decimal=Decimal(500)),
            Tier(up_to=None, unit_amount_decimal=Decimal(600), flat_amount_decimal=None),
        )

    @pytest.mark.parametrize("shape", SHAPES)
    def test_transform_quantity_and_plan_era_transform_usage(self, shape):
        price = price_payload(transform_quantity={"divide_by": 5, "round": "up"})
        snap = read_subscription(subscription_payload(shape=shape, items=[item(price)]))
        assert snap.items[0].price is not None
        assert snap.items[0].price.transform_quantity == TransformQuantity(5, "up")

    def test_metered_item_has_no_quantity(self):
        metered = price_payload(id="price_api", usage_type="metered")
        snap = read_subscription(subscription_payload(items=[item(), item(metered, None)]))
        assert snap.items[1].quantity is None
        assert snap.items[1].price is not None
        assert snap.items[1].price.usage_type == "metered"

    def test_pre_items_single_plan_subscription(self):
        plan = {
            "id": "gold",
            "object": "plan",
            "amount": 2000,
            "currency": "usd",
            "interval": "month",
            "interval_count": 1,
        }
        snap = read_subscription(
            {
                "id": "sub_old",
                "plan": plan,
                "quantity": 2,
                "current_period_start": T0,
                "current_period_end": T0 + MONTH,
            }
        )
        (only,) = snap.items
        assert only.quantity == 2
        assert only.price is not None
        assert (only.price.id, only.price.unit_amount_decimal) == ("gold", Decimal(2000))
        assert snap.currency == "usd"

    def test_multi_currency_price_options_are_read(self):
        price = price_payload(
            currency_options={"eur": {"unit_amount": 4500, "unit_amount_decimal": "4500"}}
        )
        read = read_price(price)
        assert read.currency_options["eur"].unit_amount_decimal == Decimal(4500)


class TestDefensiveReading:
    def test_empty_object_reads_without_raising(self):
        snap = read_subscription({})
        assert snap.id is None
        assert snap.status == ""
        assert snap.currency == ""
        assert snap.items == ()
        assert snap.discounts == ()
        assert snap.discount_ids == ()
        assert snap.cancellation_details == CancellationDetails(None, None, None)
        assert snap.metadata == {}

    def test_nulls_everywhere(self):
        payload = dict.fromkeys(
            [
                "customer",
                "items",
                "discount",
                "discounts",
                "metadata",
                "pause_collection",
                "cancellation_details",
                "currency",
                "status",
                "current_period_end",
            ],
        )
        snap = read_subscription(payload)
        assert snap.customer is None
        assert snap.items == ()
        assert snap.pause_collection is None

    def test_expanded_customer_and_product(self):
        price = price_payload(product={"id": "prod_x", "object": "product", "name": "X"})
        payload = subscription_payload(
            customer={"id": "cus_x", "object": "customer"}, items=[item(price)]
        )
        snap = read_subscription(payload)
        assert snap.customer == "cus_x"
        assert snap.items[0].price is not None
        assert snap.items[0].price.product == "prod_x"

    def test_items_as_plain_list(self):
        payload = subscription_payload()
        payload["items"] = payload["items"]["data"]
        assert len(read_subscription(payload).items) == 1

    def test_lifecycle_fields(self):
        payload = subscription_payload(
            status="canceled",
            cancel_at_period_end=True,
            cancel_at=T0,
            canceled_at=T0 - DAY,
            ended_at=T0,
            trial_start=T0 - 20 * DAY,
            trial_end=T0 - 6 * DAY,
            cancellation_details={
                "reason": "cancellation_requested",
                "feedback": "too_expensive",
                "comment": "pricey",
            },
            metadata={"plan_tier": "pro"},
        )
        snap = read_subscription(payload)
        assert snap.status == "canceled"
        assert snap.cancel_at_period_end is True
        assert (snap.cancel_at, snap.canceled_at, snap.ended_at) == (T0, T0 - DAY, T0)
        assert (snap.trial_start, snap.trial_end) == (T0 - 20 * DAY, T0 - 6 * DAY)
        assert snap.cancellation_details == CancellationDetails(
            "cancellation_requested", "too_expensive", "pricey"
        )
        assert snap.metadata == {"plan_tier": "pro"}
        assert snap.created == T0 - 10 * DAY
        assert snap.start_date == T0 - 10 * DAY

    def test_ancient_start_field_is_read_as_start_date(self):
        snap = read_subscription(subscription_payload(shape="ancient", created=T0 - 5))
        assert snap.start_date == T0 - 5

    def test_pause_collection_behavior(self):
        paused = subscription_payload(pause_collection={"behavior": "void", "resumes_at": None})
        assert read_subscription(paused).pause_collection == "void"
        assert read_subscription(subscription_payload()).pause_collection is None

    def test_bool_is_not_read_as_int(self):
        assert read_subscription({"created": True}).created is None


class TestDiscountReading:
    def test_discount_with_coupon_on_it(self):
        raw = discount_payload(
            coupon=coupon_payload(
                id="SAVE20", percent_off=20.0, duration="repeating", duration_in_months=3
            ),
            start=T0,
            end=T0 + 90 * DAY,
            subscription_item="si_1",
        )
        read = read_discount(raw)
        assert read.id == "di_1"
        assert read.coupon is not None
        assert read.coupon.percent_off == Decimal(20)
        assert read.coupon.duration == "repeating"
        assert read.coupon.duration_in_months == 3
        assert (read.start, read.end) == (T0, T0 + 90 * DAY)
        assert (read.subscription, read.subscription_item, read.customer) == (
            "sub_1",
            "si_1",
            "cus_1",
        )

    def test_newest_versions_source_coupon(self):
        raw = discount_payload(
            coupon=coupon_payload(amount_off=1000, currency="USD"), coupon_at="source"
        )
        read = read_discount(raw)
        assert read.coupon is not None
        assert (read.coupon.amount_off, read.coupon.currency) == (1000, "usd")

    def test_unexpanded_source_coupon_keeps_only_its_id(self):
        read = read_discount(discount_payload(coupon="SAVE20", coupon_at="source"))
        assert read.coupon is None
        assert read.coupon_id == "SAVE20"

    def test_percent_off_float_keeps_its_digits(self):
        read = read_discount(discount_payload(coupon=coupon_payload(percent_off=33.3)))
        assert read.coupon is not None
        assert read.coupon.percent_off == Decimal("33.3")

    def test_multi_currency_amount_off(self):
        coupon = coupon_payload(
            amount_off=1000, currency="usd", currency_options={"EUR": {"amount_off": 900}}
        )
        read = read_discount(discount_payload(coupon=coupon))
        assert read.coupon is not None
        assert read.coupon.amount_off_in("usd") == 1000
        assert read.coupon.amount_off_in("eur") == 900
        assert read.coupon.amount_off_in("gbp") is None

    def test_current_webhook_lists_bare_ids(self):
        payload = subscription_payload(discounts=[discount_payload(id="di_a"), "di_b"])
        snap = read_subscription(payload)
        assert snap.discounts == ()
        assert snap.discount_ids == ("di_a", "di_b")

    def test_current_expanded_discounts_are_embedded(self):
        payload = subscription_payload(
            discounts=[discount_payload(id="di_a", coupon_at="source")], expand_discounts=True
        )
        snap = read_subscription(payload)
        assert [d.id for d in snap.discounts] == ["di_a"]
        assert snap.discount_ids == ()

    def test_legacy_discount_listed_twice_is_read_once(self):
        payload = subscription_payload(
            shape="legacy", discounts=[discount_payload(id="di_a"), "di_b"]
        )
        assert payload["discounts"] == ["di_a", "di_b"]
        snap = read_subscription(payload)
        assert [d.id for d in snap.discounts] == ["di_a"]
        assert snap.discount_ids == ("di_b",)

    def test_legacy_discount_expanded_twice_is_read_once(self):
        payload = subscription_payload(
            shape="legacy", discounts=[discount_payload(id="di_a")], expand_discounts=True
        )
        assert payload["discount"]["id"] == payload["discounts"][0]["id"] == "di_a"
        snap = read_subscription(payload)
        assert [d.id for d in snap.discounts] == ["di_a"]

    def test_ancient_discount_without_id(self):
        payload = subscription_payload(shape="ancient", discounts=[discount_payload()])
        snap = read_subscription(payload)
        (only,) = snap.discounts
        assert only.id is None
        assert only.coupon is not None
        assert only.coupon.percent_off == Decimal(20)

    def test_item_level_discounts(self):
        payload = subscription_payload(
            items=[item(id="si_a", discounts=["di_x", discount_payload(id="di_y")])]
        )
        (only,) = read_subscription(payload).items
        assert only.discount_ids == ("di_x",)
        assert [d.id for d in only.discounts] == ["di_y"]
