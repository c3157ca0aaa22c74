import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.ledger.mrr import (
    billing_interval,
    missing_discount_ids,
    plan_key,
    subscription_mrr,
    unpriced_items,
)
from service.stripe_shapes import read_discount, read_subscription
from tests.factories import (
    DAY,
    SHAPES,
    T0,
    coupon_payload,
    discount_payload,
    item,
    price_payload,
    subscription_payload,
)

AT = T0


def mrr(payload, discounts=(), **kwargs):
    lookup = {d.id: d for d in map(read_discount, discounts)}
    return subscription_mrr(read_subscription(payload), AT, lookup, **kwargs)


def one_item(shape="current", quantity=1, **price):
    return subscription_payload(shape=shape, items=[item(price_payload(**price), quantity)])


class TestPerUnit:
    @pytest.mark.parametrize("shape", SHAPES)
    def test_monthly_seats(self, shape):
        assert mrr(one_item(shape, quantity=3, unit_amount=4900)) == 14700

    @pytest.mark.parametrize("shape", SHAPES)
    def test_unit_amount_decimal(self, shape):
        # 12.5 * 4 = 50
        assert mrr(one_item(shape, quantity=4, unit_amount_decimal="12.5")) == 50

    @pytest.mark.parametrize("shape", SHAPES)
    @pytest.mark.parametrize(("rounding", "expected"), [("up", 3000), ("down", 2000)])
    def test_transform_quantity(self, shape, rounding, expected):
        # 11 units ÷ 5 = 2.2 packs → 3 (up) or 2 (down) packs * 1000
        sub = one_item(
            shape,
            quantity=11,
            unit_amount=1000,
            transform_quantity={"divide_by": 5, "round": rounding},
        )
        assert mrr(sub) == expected

    @pytest.mark.parametrize("shape", SHAPES)
    def test_zero_decimal_currency_is_not_rescaled(self, shape):
        assert mrr(one_item(shape, unit_amount=1000, currency="jpy")) == 1000

    def test_items_add_up(self):
        sub = subscription_payload(
            items=[
                item(price_payload(id="price_a", unit_amount=4900), 2),
                item(price_payload(id="price_b", unit_amount=1500), 1),
            ]
        )
        assert mrr(sub) == 11300  # 2 * 4900 + 1500

    @pytest.mark.parametrize("shape", SHAPES)
    def test_metered_item_adds_nothing(self, shape):
        sub = subscription_payload(
            shape=shape,
            items=[
                item(price_payload(unit_amount=4900)),
                item(price_payload(id="price_api", unit_amount=5, usage_type="metered"), None),
            ],
        )
        assert mrr(sub) == 4900


class TestIntervalNormalization:
    @pytest.mark.parametrize("shape", SHAPES)
    @pytest.mark.parametrize(
        ("interval", "count", "amount", "expected"),
        [
            ("year", 1, 120000, 10000),  # 120000 ÷ 12
            ("week", 1, 1000, 4333),  # 1000 * 52/12 = 4333.33
            ("month", 3, 30000, 10000),  # 30000 ÷ 3
            ("day", 1, 100, 3042),  # 100 * 365/12 = 3041.67
            ("week", 2, 1000, 2167),  # 1000 * 52/12 ÷ 2 = 2166.67
            ("year", 2, 240000, 10000),  # 240000 ÷ 24
        ],
    )
    def test_normalized_to_a_month(self, shape, interval, count, amount, expected):
        sub = one_item(shape, unit_amount=amount, interval=interval, interval_count=count)
        assert mrr(sub) == expected

    def test_exact_half_rounds_up(self):
        # 6 * 365/12 = 182.5 exactly
        assert mrr(one_item(unit_amount=6, interval="day")) == 183

    def test_rounds_once_per_subscription_not_per_item(self):
        # 2 * 4333.33 = 8666.67 → 8667; rounding each item first would give 8666
        weekly = price_payload(unit_amount=1000, interval="week")
        sub = subscription_payload(items=[item(weekly), item({**weekly, "id": "price_w2"})])
        assert mrr(sub) == 8667


TIERS = [
    {"up_to": 5, "unit_amount": 1000},
    {"up_to": 10, "unit_amount": 800, "flat_amount": 2000},
    {"up_to": "inf", "unit_amount": 600},
]


def tiered(mode, quantity, shape="current", tiers=TIERS):
    return one_item(shape, quantity=quantity, billing_scheme="tiered", tiers_mode=mode, tiers=tiers)


class TestTiered:
    @pytest.mark.parametrize("shape", SHAPES)
    def test_volume_prices_all_units_at_the_reached_tier(self, shape):
        # 7 units fall in tier 2: 7 * 800 + 2000 flat = 7600
        assert mrr(tiered("volume", 7, shape)) == 7600

    def test_volume_on_a_tier_boundary(self):
        # 5 units are still tier 1: 5 * 1000 = 5000
        assert mrr(tiered("volume", 5)) == 5000

    def test_volume_last_tier(self):
        # 12 units in the open tier: 12 * 600 = 7200
        assert mrr(tiered("volume", 12)) == 7200

    @pytest.mark.parametrize("shape", SHAPES)
    def test_graduated_sums_the_tiers(self, shape):
        # 5 * 1000 + (5 * 800 + 2000 flat) + 2 * 600 = 5000 + 6000 + 1200 = 12200
        assert mrr(tiered("graduated", 12, shape)) == 12200

    def test_graduated_partial_second_tier(self):
        # 5 * 1000 + (2 * 800 + 2000 flat) = 8600
        assert mrr(tiered("graduated", 7)) == 8600

    def test_zero_quantity_is_zero(self):
        assert mrr(tiered("graduated", 0)) == 0
        assert mrr(tiered("volume", 0)) == 0

    def test_volume_beyond_last_bounded_tier_is_unpriced(self):
        sub = tiered("volume", 11, tiers=TIERS[:2])
        assert mrr(sub) == 0
        assert [i.id for i in unpriced_items(read_subscription(sub))] == ["si_1"]

    def test_annual_tiered_is_normalized(self):
        # graduated 12 units = 12200 per year → 1016.67
        sub = one_item(
            quantity=12,
            billing_scheme="tiered",
            tiers_mode="graduated",
            tiers=TIERS,
            interval="year",
        )
        assert mrr(sub) == 1017


def coupon(**kwargs):
    return coupon_payload(**kwargs)


class TestDiscounts:
    @pytest.mark.parametrize("shape", SHAPES)
    def test_percent_off_forever(self, shape):
        pct = discount_payload(coupon=coupon(percent_off=20.0, duration="forever"))
        assert mrr(subscription_payload(shape=shape, discounts=[pct]), [pct]) == 3920  # * 0.8

    @pytest.mark.parametrize("shape", SHAPES)
    def test_amount_off_monthly(self, shape):
        off = discount_payload(coupon=coupon(amount_off=1000, currency="usd"))
        assert mrr(subscription_payload(shape=shape, discounts=[off]), [off]) == 3900  # - 1000

    def test_amount_off_is_per_invoice_so_normalized_by_interval(self):
        # (120000 - 12000) ÷ 12 = 9000
        off = discount_payload(coupon=coupon(amount_off=12000, currency="usd"))
        sub = subscription_payload(
            items=[item(price_payload(unit_amount=120000, interval="year"))], discounts=[off]
        )
        assert mrr(sub, [off]) == 9000

    @pytest.mark.parametrize("shape", SHAPES)
    def test_discount_that_ended_stops_counting(self, shape):
        ended = discount_payload(start=AT - 100 * DAY, end=AT)
        assert mrr(subscription_payload(shape=shape, discounts=[ended]), [ended]) == 4900

    def test_discount_not_started_yet(self):
        later = discount_payload(start=AT + 1)
        assert mrr(subscription_payload(discounts=[later]), [later]) == 4900

    def test_discount_still_running(self):
        running = discount_payload(start=AT - DAY, end=AT + 1)
        assert mrr(subscription_payload(discounts=[running]), [running]) == 3920

    def test_amount_off_in_other_currency_is_ignored(self):
        eur = discount_payload(coupon=coupon(amount_off=1000, currency="eur"))
        assert mrr(subscription_payload(discounts=[eur]), [eur]) == 4900

    def test_multi_currency_coupon_uses_the_subscription_currency(self):
        off = discount_payload(
            coupon=coupon(
                amount_off=1000, currency="usd", currency_options={"eur": {"amount_off": 900}}
            )
        )
        sub = subscription_payload(items=[item(price_payload(currency="eur"))], discounts=[off])
        assert mrr(sub, [off]) == 4000  # 4900 - 900

    def test_never_below_zero(self):
        huge = discount_payload(coupon=coupon(amount_off=10**6, currency="usd"))
        assert mrr(subscription_payload(discounts=[huge]), [huge]) == 0

    def test_item_discount_applies_to_its_item_only(self):
        half = discount_payload(
            id="di_item", coupon=coupon(percent_off=50.0), subscription_item="si_b"
        )
        sub = subscription_payload(
            items=[
                item(price_payload(id="price_a", unit_amount=4900), id="si_a"),
                item(
                    price_payload(id="price_b", unit_amount=1000), id="si_b", discounts=["di_item"]
                ),
            ]
        )
        assert mrr(sub, [half]) == 5400  # 4900 + 1000 * 0.5

    def test_item_discounts_before_subscription_discounts(self):
        # item: 4900 - 900 = 4000; subscription 10% of 4000 → 3600
        item_off = discount_payload(id="di_i", coupon=coupon(amount_off=900, currency="usd"))
        sub_pct = discount_payload(id="di_s", coupon=coupon(percent_off=10.0))
        sub = subscription_payload(items=[item(discounts=["di_i"])], discounts=[sub_pct])
        assert mrr(sub, [item_off, sub_pct]) == 3600

    def test_discounts_stack_in_order(self):
        # 4900 * 0.8 = 3920, then - 1000 = 2920
        pct = discount_payload(id="di_p", coupon=coupon(percent_off=20.0))
        off = discount_payload(id="di_o", coupon=coupon(amount_off=1000, currency="usd"))
        assert mrr(subscription_payload(discounts=[pct, off]), [pct, off]) == 2920

    def test_unexpanded_ids_are_joined_from_the_lookup(self):
        sub = subscription_payload(discounts=["di_late"])
        late = discount_payload(id="di_late", coupon_at="source")
        assert mrr(sub) == 4900
        assert mrr(sub, [late]) == 3920

    def test_missing_discounts_are_reported(self):
        sub = read_subscription(
            subscription_payload(
                items=[item(discounts=["di_item"])], discounts=["di_sub", "di_known"]
            )
        )
        known = read_discount(discount_payload(id="di_known"))
        assert missing_discount_ids(sub, {"di_known": known}) == {"di_item", "di_sub"}
        assert missing_discount_ids(sub, None) == {"di_item", "di_sub", "di_known"}

    def test_discount_with_unexpanded_coupon_is_ignored_and_reported(self):
        bare = discount_payload(id="di_bare", coupon="SAVE20", coupon_at="source")
        payload = subscription_payload(discounts=[bare], expand_discounts=True)
        assert mrr(payload) == 4900
        assert missing_discount_ids(read_subscription(payload), {}) == {"di_bare"}

    @pytest.mark.parametrize("expand", [False, True])
    def test_legacy_discount_listed_twice_applies_once(self, expand):
        pct = discount_payload(id="di_a")
        sub = subscription_payload(shape="legacy", discounts=[pct], expand_discounts=expand)
        assert mrr(sub, [pct]) == 3920
        assert missing_discount_ids(read_subscription(sub), {}) == set()

    def test_full_percent_off_is_zero(self):
        free = discount_payload(coupon=coupon(percent_off=100.0))
        assert mrr(subscription_payload(discounts=[free]), [free]) == 0


class TestStatus:
    @pytest.mark.parametrize("shape", SHAPES)
    def test_trialing_is_zero(self, shape):
        assert (
            mrr(
                subscription_payload(
                    shape=shape, status="trialing", trial_start=AT - DAY, trial_end=AT + DAY
                )
            )
            == 0
        )

    def test_past_due_counts_by_default(self):
        assert mrr(subscription_payload(status="past_due")) == 4900

    def test_past_due_not_counted_when_configured(self):
        assert mrr(subscription_payload(status="past_due"), past_due_counts=False) == 0

    def test_active_counts_with_past_due_off(self):
        assert mrr(subscription_payload(), past_due_counts=False) == 4900

    @pytest.mark.parametrize(
        "status",
        ["incomplete", "incomplete_expired", "unpaid", "canceled", "paused", "", "whatever"],
    )
    def test_other_statuses_are_zero(self, status):
        assert mrr(subscription_payload(status=status)) == 0

    @pytest.mark.parametrize("shape", SHAPES)
    def test_pause_collection_is_zero(self, shape):
        paused = subscription_payload(
            shape=shape, pause_collection={"behavior": "mark_uncollectible", "resumes_at": None}
        )
        assert mrr(paused) == 0

    def test_cancel_at_period_end_still_counts(self):
        sub = subscription_payload(
            cancel_at_period_end=True, cancel_at=AT + DAY, canceled_at=AT - DAY
        )
        assert mrr(sub) == 4900

    def test_ended_subscription_is_zero_from_ended_at(self):
        assert mrr(subscription_payload(ended_at=AT)) == 0
        assert mrr(subscription_payload(ended_at=AT + 1)) == 4900


class TestHelpers:
    def test_billing_interval_and_plan_key_skip_metered_items(self):
        sub = read_subscription(
            subscription_payload(
                items=[
                    item(price_payload(id="price_api", usage_type="metered", interval="day"), None),
                    item(price_payload(id="price_pro", interval="year")),
                ]
            )
        )
        assert billing_interval(sub) == "year"
        assert plan_key(sub) == "price_pro"

    def test_helpers_on_ancient_plan_items(self):
        sub = read_subscription(one_item("ancient", id="gold_monthly"))
        assert billing_interval(sub) == "month"
        assert plan_key(sub) == "gold_monthly"

    def test_helpers_without_items(self):
        sub = read_subscription({})
        assert billing_interval(sub) is None
        assert plan_key(sub) is None
        assert subscription_mrr(sub, AT) == 0

    def test_price_in_another_currency_without_options_is_unpriced(self):
        payload = subscription_payload(currency="eur")  # price is usd, options not expanded
        sub = read_subscription(payload)
        assert subscription_mrr(sub, AT) == 0
        assert [i.id for i in unpriced_items(sub)] == ["si_1"]

    def test_price_currency_options_are_used(self):
        price = price_payload(
            currency_options={"eur": {"unit_amount": 4500, "unit_amount_decimal": "4500"}}
        )
        sub = read_subscription(subscription_payload(currency="eur", items=[item(price)]))
        assert subscription_mrr(sub, AT) == 4500
        assert unpriced_items(sub) == []


amounts = st.integers(min_value=0, max_value=10**7)
intervals = st.sampled_from(["day", "week", "month", "year"])
counts = st.integers(min_value=1, max_value=12)
coupons = st.one_of(
    st.builds(
        lambda p: coupon_payload(percent_off=p),
        st.floats(min_value=0, max_value=100, allow_nan=False).map(lambda f: round(f, 2)),
    ),
    st.builds(lambda a: coupon_payload(amount_off=a, currency="usd"), amounts),
)


class TestProperties:
    @given(amounts, st.integers(0, 500), intervals, counts, st.lists(coupons, max_size=3))
    def test_never_negative(self, amount, quantity, interval, count, coupon_list):
        discounts = [discount_payload(id=f"di_{n}", coupon=c) for n, c in enumerate(coupon_list)]
        sub = subscription_payload(
            items=[
                item(
                    price_payload(unit_amount=amount, interval=interval, interval_count=count),
                    quantity,
                )
            ],
            discounts=discounts,
        )
        assert mrr(sub, discounts) >= 0

    @given(amounts, st.integers(1, 500), intervals, counts)
    def test_full_percent_off_is_always_zero(self, amount, quantity, interval, count):
        free = discount_payload(coupon=coupon_payload(percent_off=100.0))
        price = price_payload(unit_amount=amount, interval=interval, interval_count=count)
        sub = subscription_payload(items=[item(price, quantity)], discounts=[free])
        assert mrr(sub, [free]) == 0

    @given(amounts, st.integers(1, 20), intervals, counts)
    def test_n_items_equal_one_item_of_quantity_n(self, amount, n, interval, count):
        price = price_payload(unit_amount=amount, interval=interval, interval_count=count)
        many = subscription_payload(items=[item(price, 1, id=f"si_{k}") for k in range(n)])
        one = subscription_payload(items=[item(price, n)])
        assert mrr(many) == mrr(one)

    @given(amounts, st.integers(0, 500), intervals, counts)
    def test_every_shape_agrees(self, amount, quantity, interval, count):
        results = {
            mrr(
                one_item(
                    shape,
                    quantity=quantity,
                    unit_amount=amount,
                    interval=interval,
                    interval_count=count,
                )
            )
            for shape in SHAPES
        }
        assert len(results) == 1
