"""The Stripe account simulator: its events look like Stripe's, and its truth follows §3-§4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from sim.simulate import (
    DAY,
    AccountBuilder,
    Customer,
    Shape,
    Simulation,
    event_bytes,
    simulate,
)

START = 1_704_067_200  # 2024-01-01T00:00:00Z
HOUR = 3600
FEEDBACK = {
    "customer_service",
    "low_quality",
    "missing_features",
    "other",
    "switched_service",
    "too_complex",
    "too_expensive",
    "unused",
}
SUBSCRIPTION_TYPES = {
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.trial_will_end",
}


@pytest.fixture(scope="module")
def current() -> Simulation:
    return simulate(customers=800, months=12, seed=7, shape="current")


@pytest.fixture(scope="module")
def legacy() -> Simulation:
    return simulate(customers=800, months=12, seed=7, shape="legacy", account="acct_sim")


def objects(sim: Simulation, kind: str) -> list[dict[str, Any]]:
    return [e["data"]["object"] for e in sim.events if e["data"]["object"]["object"] == kind]


def of_type(sim: Simulation, type_: str) -> list[dict[str, Any]]:
    return [e for e in sim.events if e["type"] == type_]


def subscription_of(event: dict[str, Any]) -> str | None:
    obj = event["data"]["object"]
    if obj["object"] == "subscription":
        return obj["id"]
    if obj["object"] == "invoice":
        parent = obj.get("parent")
        return parent["subscription_details"]["subscription"] if parent else obj["subscription"]
    return None


def day(n: int) -> date:
    return date(2024, 1, 1) + timedelta(days=n)


def moves(sim: Simulation) -> list[tuple[date, str, int, int]]:
    return [(m.day, m.currency, m.from_mrr, m.to_mrr) for m in sim.truth.movements()]


def one_customer(shape: Shape = "current") -> tuple[AccountBuilder, Customer]:
    b = AccountBuilder(shape=shape, start=START)
    return b, b.customer()


class TestDeterminism:
    def test_same_seed_gives_identical_events_and_truth(self) -> None:
        first = simulate(customers=150, months=6, seed=42)
        second = simulate(customers=150, months=6, seed=42)
        assert [event_bytes(e) for e in first.events] == [event_bytes(e) for e in second.events]
        assert first.truth.movements() == second.truth.movements()

    def test_identical_across_processes_whatever_the_hash_seed(self) -> None:
        # Set iteration order changes with PYTHONHASHSEED; nothing may depend on it.
        script = (
            "import hashlib; from sim.simulate import simulate, event_bytes; "
            "sim = simulate(customers=60, months=4, seed=9); "
            "print(hashlib.sha256(b''.join(map(event_bytes, sim.events))).hexdigest())"
        )
        digests = {
            subprocess.run(
                [sys.executable, "-c", script],
                env={**os.environ, "PYTHONHASHSEED": hash_seed},
                cwd=Path(__file__).resolve().parents[2],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for hash_seed in ("1", "2")
        }
        assert len(digests) == 1
        assert len(digests.pop().strip()) == 64

    def test_another_seed_gives_another_account(self) -> None:
        first = simulate(customers=150, months=6, seed=1)
        second = simulate(customers=150, months=6, seed=2)
        assert first.events[0]["id"] != second.events[0]["id"]
        assert first.truth.movements() != second.truth.movements()

    def test_builder_ids_depend_on_the_seed_only(self) -> None:
        def ids(seed: int) -> list[str]:
            b = AccountBuilder(seed=seed)
            s = b.subscribe(b.customer(), b.price(1000))
            return [s.id, s.customer.id, s.items[0].id, *(e["id"] for e in b.build().events)]

        assert ids(5) == ids(5)
        assert ids(5) != ids(6)

    def test_event_and_object_ids_are_unique(self, current: Simulation) -> None:
        event_ids = [e["id"] for e in current.events]
        assert len(set(event_ids)) == len(event_ids)
        numbers = {(o["id"], o["number"]) for o in objects(current, "invoice")}
        assert len({i for i, _ in numbers}) == len({n for _, n in numbers}) == len(numbers)
        subscription_ids = {o["id"] for o in objects(current, "subscription")}
        assert subscription_ids == set(current.subscription_ids)
        items = {
            (i["id"], s["id"]) for s in objects(current, "subscription") for i in s["items"]["data"]
        }
        assert len({item_id for item_id, _ in items}) == len(items)  # no item in two subs


class TestEnvelope:
    def test_events_are_stripe_event_envelopes_sorted_by_created(self, current: Simulation) -> None:
        created = [e["created"] for e in current.events]
        assert created == sorted(created)
        for event in current.events:
            assert event["id"].startswith("evt_")
            assert event["object"] == "event"
            assert event["api_version"] == "2025-03-31.basil"
            assert event["livemode"] is False
            assert "account" not in event
            assert set(event["data"]) <= {"object", "previous_attributes"}
            assert current.start <= event["created"] < current.until

    def test_updated_events_carry_previous_attributes(self, current: Simulation) -> None:
        updated = of_type(current, "customer.subscription.updated")
        assert updated
        assert all(e["data"]["previous_attributes"] for e in updated)
        assert all(
            "previous_attributes" not in e["data"]
            for e in of_type(current, "customer.subscription.created")
        )

    def test_connect_account_and_legacy_api_version(self, legacy: Simulation) -> None:
        assert {e["account"] for e in legacy.events} == {"acct_sim"}
        assert {e["api_version"] for e in legacy.events} == {"2024-06-20"}

    def test_event_bytes_is_stripes_pretty_json(self, current: Simulation) -> None:
        event = of_type(current, "invoice.paid")[0]
        body = event_bytes(event)
        assert json.loads(body) == event
        assert body.startswith(b'{\n  "id": "evt_')

    def test_the_account_runs_through_whole_utc_days(self, current: Simulation) -> None:
        assert current.until % DAY == 0
        assert current.until == 1_735_689_600  # 12 calendar months after 2024-01-01
        assert current.truth.last_day == date(2024, 12, 31)


class TestCurrentShape:
    def test_periods_live_on_items_not_on_the_subscription(self, current: Simulation) -> None:
        for sub in objects(current, "subscription"):
            assert "current_period_end" not in sub and "current_period_start" not in sub
            for item in sub["items"]["data"]:
                assert item["current_period_start"] < item["current_period_end"]
                assert item["price"]["object"] == "price"
                assert item["plan"]["object"] == "plan"  # Stripe still sends it

    def test_discounts_are_unexpanded_ids_delivered_by_discount_events(
        self, current: Simulation
    ) -> None:
        first_seen: dict[str, int] = {}
        for event in of_type(current, "customer.discount.created"):
            discount = event["data"]["object"]
            assert discount["object"] == "discount" and discount["id"].startswith("di_")
            assert discount["coupon"]["object"] == "coupon"
            first_seen.setdefault(discount["id"], event["created"])
        referenced = 0
        for event in current.events:
            sub = event["data"]["object"]
            if sub["object"] != "subscription":
                continue
            assert "discount" not in sub
            for ref in sub["discounts"]:
                assert isinstance(ref, str)
                assert first_seen[ref] <= event["created"]
                referenced += 1
        assert referenced

    def test_invoices_name_their_subscription_under_parent(self, current: Simulation) -> None:
        invoices = objects(current, "invoice")
        subscriptions = set(current.subscription_ids)
        for invoice in invoices:
            assert "subscription" not in invoice
            details = invoice["parent"]["subscription_details"]
            assert details["subscription"] in subscriptions
            line = invoice["lines"]["data"][0]
            assert line["parent"]["subscription_item_details"]["subscription"] in subscriptions
            assert line["pricing"]["price_details"]["price"].startswith("price_")

    def test_plain_renewal_only_moves_the_item_periods(self, current: Simulation) -> None:
        renewals = [
            e
            for e in of_type(current, "customer.subscription.updated")
            if set(e["data"]["previous_attributes"]) == {"items", "latest_invoice"}
        ]
        assert len(renewals) > 100
        for event in renewals[:200]:
            new_items = event["data"]["object"]["items"]["data"]
            old_items = event["data"]["previous_attributes"]["items"]["data"]
            for new, old in zip(new_items, old_items, strict=True):
                assert old["current_period_end"] == new["current_period_start"]
                strip = ("current_period_start", "current_period_end")
                assert {k: v for k, v in new.items() if k not in strip} == {
                    k: v for k, v in old.items() if k not in strip
                }
            sub_id = event["data"]["object"]["id"]
            before = current.truth.subscription_mrr(sub_id, event["created"] - 1)
            assert current.truth.subscription_mrr(sub_id, event["created"]) == before


class TestLegacyShape:
    def test_periods_live_on_the_subscription(self, legacy: Simulation) -> None:
        for sub in objects(legacy, "subscription"):
            assert sub["current_period_start"] < sub["current_period_end"]
            assert all("current_period_end" not in i for i in sub["items"]["data"])
            if len(sub["items"]["data"]) == 1:
                assert sub["plan"]["id"] == sub["items"]["data"][0]["plan"]["id"]
                assert sub["quantity"] == sub["items"]["data"][0]["quantity"]

    def test_discount_is_embedded_with_its_coupon(self, legacy: Simulation) -> None:
        subs = objects(legacy, "subscription")
        assert all("discount" in s for s in subs)
        with_discount = [s for s in subs if s["discount"] is not None]
        assert with_discount
        for sub in with_discount:
            assert sub["discount"]["coupon"]["object"] == "coupon"
            assert sub["discounts"] == [sub["discount"]["id"]]

    def test_invoices_name_their_subscription_directly(self, legacy: Simulation) -> None:
        for invoice in objects(legacy, "invoice"):
            assert "parent" not in invoice
            assert invoice["subscription"] in set(legacy.subscription_ids)
            assert invoice["lines"]["data"][0]["subscription_item"].startswith("si_")

    def test_plain_renewal_moves_the_subscription_period(self, legacy: Simulation) -> None:
        renewals = [
            e
            for e in of_type(legacy, "customer.subscription.updated")
            if set(e["data"]["previous_attributes"])
            == {"current_period_end", "current_period_start", "latest_invoice"}
        ]
        assert len(renewals) > 100
        for event in renewals:
            previous = event["data"]["previous_attributes"]
            assert previous["current_period_end"] == event["data"]["object"]["current_period_start"]


class TestScenarios:
    """The generated account exercises every behaviour the ledger must handle."""

    def test_plans_currencies_and_intervals(self, current: Simulation) -> None:
        prices = {
            i["price"]["id"]: i["price"]
            for s in objects(current, "subscription")
            for i in s["items"]["data"]
        }
        assert {p["currency"] for p in prices.values()} == {"usd", "eur", "gbp", "jpy"}
        intervals = {
            (p["recurring"]["interval"], p["recurring"]["interval_count"]) for p in prices.values()
        }
        assert {("month", 1), ("month", 3), ("year", 1), ("week", 1), ("week", 2)} <= intervals
        # JPY is zero-decimal: whole yen, never a cents-scaled amount like 435000.
        jpy = [p["unit_amount"] for p in prices.values() if p["currency"] == "jpy"]
        assert jpy and max(jpy) < 200_000
        subs = objects(current, "subscription")
        assert any(i["quantity"] > 1 for s in subs for i in s["items"]["data"])
        assert any(len(s["items"]["data"]) > 1 for s in subs)

    def test_coupons_percent_amount_forever_and_repeating(self, current: Simulation) -> None:
        created = of_type(current, "customer.discount.created")
        coupons = [e["data"]["object"]["coupon"] for e in created]
        kinds = {(c["duration"], c["percent_off"] is not None) for c in coupons}
        assert kinds == {(d, p) for d in ("forever", "repeating") for p in (True, False)}
        repeating = [
            e["data"]["object"]
            for e in of_type(current, "customer.discount.created")
            if e["data"]["object"]["coupon"]["duration"] == "repeating"
        ]
        assert all(d["end"] is not None and d["end"] > d["start"] for d in repeating)
        assert of_type(current, "customer.discount.deleted")

    def test_trials_and_statuses(self, current: Simulation) -> None:
        statuses = {s["status"] for s in objects(current, "subscription")}
        assert statuses == {"trialing", "active", "past_due", "unpaid", "canceled"}
        trials = [s for s in objects(current, "subscription") if s["status"] == "trialing"]
        assert all(s["trial_start"] < s["trial_end"] for s in trials)
        for sub in trials:
            assert current.truth.subscription_mrr(sub["id"], sub["trial_end"] - 1) == 0

    def test_cancellations_voluntary_and_involuntary(self, current: Simulation) -> None:
        deleted = [e["data"]["object"] for e in of_type(current, "customer.subscription.deleted")]
        reasons = {d["cancellation_details"]["reason"] for d in deleted}
        assert reasons == {"cancellation_requested", "payment_failed"}
        feedback = {d["cancellation_details"]["feedback"] for d in deleted}
        assert None in feedback and len(feedback - {None}) >= 5
        assert feedback - {None} <= FEEDBACK
        assert any(d["cancellation_details"]["comment"] for d in deleted)
        assert all(d["status"] == "canceled" and d["ended_at"] for d in deleted)
        at_period_end = [d for d in deleted if d["cancel_at_period_end"]]
        assert at_period_end
        counted = 0
        for sub in at_period_end:
            assert sub["ended_at"] == sub["cancel_at"]
            assert sub["canceled_at"] < sub["ended_at"]
            assert current.truth.subscription_mrr(sub["id"], sub["ended_at"]) == 0
            # Until the deletion MRR still counts (0 only under a 100%-off discount).
            counted += current.truth.subscription_mrr(sub["id"], sub["ended_at"] - 1) > 0
        assert counted >= 0.9 * len(at_period_end)

    def test_failed_payments_retry_then_recover_or_churn(self, current: Simulation) -> None:
        failed = [e["data"]["object"] for e in of_type(current, "invoice.payment_failed")]
        assert {f["attempt_count"] for f in failed} == {1, 2, 3, 4}
        for invoice in failed:
            assert invoice["status"] == "open"
            assert (invoice["next_payment_attempt"] is None) == (invoice["attempt_count"] == 4)
        failed_ids = {f["id"] for f in failed}
        recovered = [
            e for e in of_type(current, "invoice.paid") if e["data"]["object"]["id"] in failed_ids
        ]
        assert recovered
        assert all(e["data"]["object"]["attempt_count"] >= 2 for e in recovered)

    def test_past_due_keeps_its_mrr(self, current: Simulation) -> None:
        to_past_due = [
            e
            for e in of_type(current, "customer.subscription.updated")
            if e["data"]["previous_attributes"] == {"status": "active"}
        ]
        assert to_past_due
        for event in to_past_due:
            sub_id = event["data"]["object"]["id"]
            mrr = current.truth.subscription_mrr(sub_id, event["created"])
            assert mrr == current.truth.subscription_mrr(sub_id, event["created"] - 1)

    def test_reactivations_two_subscriptions_and_same_day_swaps(self, current: Simulation) -> None:
        churned: set[str] = set()
        reactivated = set()
        for m in current.truth.movements():
            if m.from_mrr == 0 and m.customer_id in churned:
                reactivated.add(m.customer_id)
            if m.to_mrr == 0:
                churned.add(m.customer_id)
        assert reactivated
        by_customer: dict[str, set[str]] = defaultdict(set)
        for sub in objects(current, "subscription"):
            by_customer[sub["customer"]].add(sub["id"])
        assert any(len(subs) > 1 for subs in by_customer.values())
        deletions = {
            (e["data"]["object"]["customer"], e["created"])
            for e in of_type(current, "customer.subscription.deleted")
        }
        swaps = [
            e
            for e in of_type(current, "customer.subscription.created")
            if (e["data"]["object"]["customer"], e["created"]) in deletions
        ]
        assert swaps

    def test_size_per_customer(self, current: Simulation) -> None:
        assert 8 * 800 < len(current.events) < 20 * 800


class TestEventOrder:
    def test_each_subscriptions_events_strictly_increase(self, current: Simulation) -> None:
        last: dict[str, tuple[int, str]] = {}
        for event in current.events:
            sub_id = subscription_of(event)
            if sub_id is None:
                continue
            if sub_id in last:
                assert event["created"] > last[sub_id][0], (sub_id, last[sub_id], event["type"])
            else:
                assert event["type"] == "customer.subscription.created"
            last[sub_id] = (event["created"], event["type"])

    def test_discount_events_share_the_second_of_their_subscription_event(
        self, current: Simulation
    ) -> None:
        seconds = {
            (subscription_of(e), e["created"])
            for e in current.events
            if e["type"] in SUBSCRIPTION_TYPES
        }
        discount_events = [e for e in current.events if e["type"].startswith("customer.discount.")]
        assert discount_events
        for event in discount_events:
            assert (event["data"]["object"]["subscription"], event["created"]) in seconds

    def test_nothing_happens_after_deletion(self, current: Simulation) -> None:
        ended: set[str] = set()
        for event in current.events:
            sub_id = subscription_of(event)
            if sub_id is not None and event["data"]["object"]["object"] == "subscription":
                assert sub_id not in ended
                if event["type"] == "customer.subscription.deleted":
                    ended.add(sub_id)


class TestTruthConsistency:
    @pytest.mark.parametrize("shape", ["current", "legacy"])
    def test_movement_deltas_add_up_to_each_customers_mrr(
        self, shape: str, current: Simulation, legacy: Simulation
    ) -> None:
        sim = current if shape == "current" else legacy
        totals: dict[tuple[str, str], int] = defaultdict(int)
        for m in sim.truth.movements():
            totals[m.customer_id, m.currency] += m.delta
        checked = 0
        for customer_id in sim.customer_ids:
            final = sim.truth.mrr(customer_id, sim.truth.last_day)
            summed = {c: v for (cus, c), v in totals.items() if cus == customer_id and v}
            assert summed == final
            checked += bool(final)
        assert checked > 100

    def test_movements_chain_and_match_daily_mrr(self, current: Simulation) -> None:
        level: dict[tuple[str, str], int] = defaultdict(int)
        for m in current.truth.movements():
            assert m.from_mrr != m.to_mrr
            assert m.from_mrr == level[m.customer_id, m.currency]
            level[m.customer_id, m.currency] = m.to_mrr
            assert current.truth.mrr(m.customer_id, m.day).get(m.currency, 0) == m.to_mrr
            previous = current.truth.mrr(m.customer_id, m.day - timedelta(days=1))
            assert previous.get(m.currency, 0) == m.from_mrr

    def test_total_is_the_sum_of_customers(self, current: Simulation) -> None:
        for when in (date(2024, 3, 15), current.truth.last_day):
            summed: dict[str, int] = defaultdict(int)
            for customer_id in current.customer_ids:
                for currency, mrr in current.truth.mrr(customer_id, when).items():
                    summed[currency] += mrr
            assert current.truth.total_mrr(when) == dict(summed)

    def test_shapes_differ_in_payloads_not_in_truth(
        self, current: Simulation, legacy: Simulation
    ) -> None:
        assert current.truth.movements() == legacy.truth.movements()

    def test_days_past_the_horizon_are_refused(self, current: Simulation) -> None:
        with pytest.raises(ValueError, match="horizon"):
            current.truth.total_mrr(current.truth.last_day + timedelta(days=1))
        assert current.truth.mrr(current.customer_ids[0], date(2023, 12, 31)) == {}


class TestMrrRules:
    """Hand-checked MRR of single-customer scenarios (design §3)."""

    @pytest.mark.parametrize(
        ("amount", "interval", "count", "quantity", "expected"),
        [
            (4900, "month", 1, 3, 14700),
            (4200, "month", 3, 1, 1400),
            (12000, "year", 1, 1, 1000),
            (900, "week", 1, 1, 3900),  # 900 × 52 / 12
            (700, "week", 2, 1, 1517),  # 700 × 52 / 12 / 2 = 1516.67
            (100, "day", 1, 1, 3042),  # 100 × 365 / 12 = 3041.67
            (6, "day", 1, 1, 183),  # 182.5: half up
        ],
    )
    def test_interval_normalization(
        self, amount: int, interval: Any, count: int, quantity: int, expected: int
    ) -> None:
        b, c = one_customer()
        b.subscribe(c, b.price(amount, "usd", interval, interval_count=count), quantity)
        assert moves(b.build()) == [(day(0), "usd", 0, expected)]

    def test_rounding_happens_once_per_subscription(self) -> None:
        b, c = one_customer()
        daily, other = b.price(6, "usd", "day"), b.price(6, "usd", "day", nickname="b")
        b.subscribe(c, items=[(daily, 1), (other, 1)])  # 182.5 + 182.5, not 183 + 183
        assert moves(b.build()) == [(day(0), "usd", 0, 365)]

    def test_jpy_amounts_are_whole_yen(self) -> None:
        b, c = one_customer()
        b.subscribe(c, b.price(4350, "jpy", "month"), 2)
        assert moves(b.build()) == [(day(0), "jpy", 0, 8700)]

    def test_percent_off_forever(self) -> None:
        b, c = one_customer()
        coupon = b.coupon(percent_off="12.5")
        b.subscribe(c, b.price(4900, "usd", "month"), 3, coupon=coupon)
        assert moves(b.build()) == [(day(0), "usd", 0, 12863)]  # 12862.5 half up

    def test_amount_off_is_spread_over_the_interval(self) -> None:
        b, c = one_customer()
        coupon = b.coupon(amount_off=1000, currency="usd")
        b.subscribe(c, b.price(12000, "usd", "year"), coupon=coupon)
        assert moves(b.build()) == [(day(0), "usd", 0, 917)]  # 1000 - 1000/12

    def test_amount_off_never_takes_mrr_below_zero(self) -> None:
        b, c = one_customer()
        coupon = b.coupon(amount_off=1000, currency="usd")
        s = b.subscribe(c, b.price(900, "usd", "week"), coupon=coupon)
        sim = b.build(until=START + 3 * DAY)
        assert moves(sim) == []
        assert sim.truth.subscription_mrr(s.id, START + DAY) == 0

    def test_repeating_discount_stops_at_its_end(self) -> None:
        b, c = one_customer()
        coupon = b.coupon(percent_off=50, duration="repeating", duration_in_months=2)
        s = b.subscribe(c, b.price(4000, "usd", "month"), at=b.day(0, hour=10), coupon=coupon)
        sim = b.build()
        assert s.discount is None
        assert moves(sim) == [(day(0), "usd", 0, 2000), (day(60), "usd", 2000, 4000)]  # Mar 1
        ended = of_type(sim, "customer.discount.deleted")
        assert [e["data"]["object"]["end"] for e in ended] == [b.day(60, hour=10)]

    def test_applying_and_removing_a_discount(self) -> None:
        b, c = one_customer()
        s = b.subscribe(c, b.price(5000, "usd", "month"))
        b.apply_coupon(s, b.coupon(percent_off=20), at=b.day(5))
        b.remove_discount(s, at=b.day(9))
        assert moves(b.build()) == [
            (day(0), "usd", 0, 5000),
            (day(5), "usd", 5000, 4000),
            (day(9), "usd", 4000, 5000),
        ]

    def test_trial_counts_nothing_until_it_converts(self) -> None:
        b, c = one_customer()
        s = b.subscribe(c, b.price(3000, "usd", "month"), trial_days=14)
        sim = b.build()
        assert s.status == "active"
        assert moves(sim) == [(day(14), "usd", 0, 3000)]
        types = [e["type"] for e in sim.events if subscription_of(e) == s.id]
        assert "customer.subscription.trial_will_end" in types

    def test_trial_canceled_before_conversion_never_moves(self) -> None:
        b, c = one_customer()
        s = b.subscribe(c, b.price(3000, "usd", "month"), trial_days=14)
        b.cancel(s, at=b.day(3), feedback="unused")
        assert moves(b.build()) == []

    def test_upgrade_and_downgrade(self) -> None:
        b, c = one_customer()
        basic, pro = b.price(2000, "usd", "month"), b.price(5000, "usd", "month", nickname="pro")
        s = b.subscribe(c, basic, 2)
        b.change(s, price=pro, at=b.day(3))
        b.change(s, quantity=1, at=b.day(7))
        sim = b.build()
        assert moves(sim) == [
            (day(0), "usd", 0, 4000),
            (day(3), "usd", 4000, 10000),
            (day(7), "usd", 10000, 5000),
        ]
        change = of_type(sim, "customer.subscription.updated")[0]
        old_item = change["data"]["previous_attributes"]["items"]["data"][0]
        assert old_item["price"]["id"] == basic.id and old_item["quantity"] == 2

    def test_switching_to_annual_restarts_the_cycle(self) -> None:
        b, c = one_customer("legacy")
        s = b.subscribe(c, b.price(3000, "usd", "month"))
        annual = b.price(30000, "usd", "year")
        b.change(s, price=annual, at=b.day(10))
        sim = b.build()
        assert moves(sim) == [(day(0), "usd", 0, 3000), (day(10), "usd", 3000, 2500)]
        assert s.billing_cycle_anchor == s.current_period_start == b.day(10)
        assert [i["billing_reason"] for i in objects(sim, "invoice")] == [
            "subscription_create",
            "subscription_update",
        ]

    def test_intraday_changes_net_out(self) -> None:
        b, c = one_customer()
        s = b.subscribe(c, b.price(1000, "usd", "month"), 2, at=b.day(0))
        b.change(s, quantity=5, at=b.day(4, hour=9))
        b.change(s, quantity=2, at=b.day(4, hour=17))
        assert moves(b.build()) == [(day(0), "usd", 0, 2000)]

    def test_end_of_day_is_the_last_second_before_midnight(self) -> None:
        b, c = one_customer()
        s = b.subscribe(c, b.price(1000, "usd", "month"))
        b.change(s, quantity=2, at=b.day(4) - 1)  # 23:59:59 on day 3
        b.change(s, quantity=3, at=b.day(6))  # 00:00:00 on day 6
        assert moves(b.build()) == [
            (day(0), "usd", 0, 1000),
            (day(3), "usd", 1000, 2000),
            (day(6), "usd", 2000, 3000),
        ]

    def test_cancel_at_period_end_counts_until_the_deletion(self) -> None:
        b, c = one_customer()
        s = b.subscribe(c, b.price(4900, "usd", "month"), 3, at=b.day(0))
        b.change(s, quantity=5, at=b.day(10))
        b.cancel(s, at=b.day(40), at_period_end=True, feedback="too_expensive", comment="pricey")
        sim = b.build()
        assert moves(sim) == [
            (day(0), "usd", 0, 14700),
            (day(10), "usd", 14700, 24500),
            (day(60), "usd", 24500, 0),  # the period ends on Mar 1
        ]
        deleted = of_type(sim, "customer.subscription.deleted")
        assert [e["created"] for e in deleted] == [b.day(60)]
        details = deleted[0]["data"]["object"]["cancellation_details"]
        assert details == {
            "comment": "pricey",
            "feedback": "too_expensive",
            "reason": "cancellation_requested",
        }
        assert sim.until == START + 61 * DAY  # build() ran past the scheduled deletion

    def test_undone_cancellation_never_churns(self) -> None:
        b, c = one_customer()
        s = b.subscribe(c, b.price(4900, "usd", "month"))
        b.cancel(s, at=b.day(10), at_period_end=True)
        b.undo_cancel(s, at=b.day(20))
        sim = b.build(until=START + 90 * DAY)
        assert moves(sim) == [(day(0), "usd", 0, 4900)]
        assert not of_type(sim, "customer.subscription.deleted")

    def test_failed_payment_recovered(self) -> None:
        b, c = one_customer()
        s = b.subscribe(c, b.price(4900, "usd", "month"))
        failed_at = b.fail_payment(s)
        assert failed_at == b.day(31) + HOUR and s.status == "past_due"
        b.fail_payment(s)
        b.recover(s)
        sim = b.build()
        assert s.status == "active"
        assert moves(sim) == [(day(0), "usd", 0, 4900)]  # past_due counts
        failures = of_type(sim, "invoice.payment_failed")
        attempts = [e["data"]["object"] for e in failures]
        assert [a["attempt_count"] for a in attempts] == [1, 2]
        assert attempts[0]["next_payment_attempt"] == failures[1]["created"] == failed_at + 3 * DAY
        assert attempts[1]["next_payment_attempt"] == failures[1]["created"] + 5 * DAY
        assert of_type(sim, "invoice.paid")[-1]["data"]["object"]["attempt_count"] == 3

    def test_failed_payment_lost_is_involuntary_churn(self) -> None:
        b, c = one_customer("legacy")
        s = b.subscribe(c, b.price(4900, "usd", "month"))
        b.fail_payment(s)
        for _ in range(3):
            last = b.fail_payment(s)
        assert s.next_payment_attempt is None
        b.cancel(s, at=last + 60, reason="payment_failed")
        sim = b.build()
        assert moves(sim) == [(day(0), "usd", 0, 4900), (day(46), "usd", 4900, 0)]
        details = of_type(sim, "customer.subscription.deleted")[0]["data"]["object"]
        assert details["cancellation_details"]["reason"] == "payment_failed"
        assert of_type(sim, "customer.subscription.deleted")[0]["request"]["id"] is None

    def test_unpaid_counts_zero_until_paid(self) -> None:
        b, c = one_customer()
        s = b.subscribe(c, b.price(2000, "usd", "month"))
        b.fail_payment(s)
        b.mark_unpaid(s, at=b.day(40))
        b.recover(s, at=b.day(50))
        assert moves(b.build()) == [
            (day(0), "usd", 0, 2000),
            (day(40), "usd", 2000, 0),
            (day(50), "usd", 0, 2000),
        ]

    def test_same_day_swap_is_one_net_movement(self) -> None:
        b, c = one_customer()
        s = b.subscribe(c, b.price(2000, "usd", "month"))
        new = b.swap(s, b.price(4500, "usd", "year"), 2, at=b.day(20, hour=15))
        sim = b.build()
        assert s.status == "canceled" and new.status == "active"
        assert new.created == s.ended_at  # the deliberate same-second case
        assert moves(sim) == [(day(0), "usd", 0, 2000), (day(20), "usd", 2000, 750)]

    def test_reactivation_is_a_new_subscription_later(self) -> None:
        b, c = one_customer()
        s = b.subscribe(c, b.price(2000, "usd", "month"))
        b.cancel(s, at=b.day(5), feedback="switched_service")
        b.subscribe(c, b.price(2000, "usd", "month"), at=b.day(50))
        assert moves(b.build()) == [
            (day(0), "usd", 0, 2000),
            (day(5), "usd", 2000, 0),
            (day(50), "usd", 0, 2000),
        ]

    def test_two_subscriptions_add_up(self) -> None:
        b, c = one_customer()
        b.subscribe(c, b.price(2000, "eur", "month"))
        b.subscribe(c, b.price(12000, "eur", "year"), at=b.day(2))
        sim = b.build()
        assert moves(sim) == [(day(0), "eur", 0, 2000), (day(2), "eur", 2000, 3000)]
        assert sim.truth.total_mrr(day(2)) == {"eur": 3000}

    def test_add_on_items(self) -> None:
        b, c = one_customer("legacy")
        s = b.subscribe(c, b.price(2000, "usd", "month"))
        b.add_item(s, b.price(500, "usd", "month", nickname="add-on"), 2, at=b.day(1))
        b.remove_item(s, 1, at=b.day(2))
        sim = b.build()
        assert moves(sim) == [
            (day(0), "usd", 0, 2000),
            (day(1), "usd", 2000, 3000),
            (day(2), "usd", 3000, 2000),
        ]
        added = of_type(sim, "customer.subscription.updated")[0]
        assert added["data"]["object"]["plan"] is None  # several items: no mirror
        assert added["data"]["previous_attributes"]["quantity"] == 1


class TestBuilderGuards:
    def test_time_only_moves_forward(self) -> None:
        b, c = one_customer()
        b.subscribe(c, b.price(1000), at=b.day(5))
        with pytest.raises(ValueError, match="forward"):
            b.customer(at=b.day(4))

    def test_a_subscription_keeps_its_currency_and_interval(self) -> None:
        b, c = one_customer()
        s = b.subscribe(c, b.price(1000, "usd"))
        with pytest.raises(ValueError, match="currency"):
            b.change(s, price=b.price(1000, "eur"))
        with pytest.raises(ValueError, match="interval"):
            b.add_item(s, b.price(1000, "usd", "year"))

    def test_feedback_must_be_one_of_stripes(self) -> None:
        b, c = one_customer()
        s = b.subscribe(c, b.price(1000))
        with pytest.raises(ValueError, match="feedback"):
            b.cancel(s, feedback="bored")

    def test_canceled_subscriptions_cannot_change(self) -> None:
        b, c = one_customer()
        s = b.subscribe(c, b.price(1000))
        b.cancel(s)
        with pytest.raises(ValueError, match="canceled"):
            b.change(s, quantity=2)

    def test_amount_off_coupon_must_match_the_currency(self) -> None:
        b, c = one_customer()
        s = b.subscribe(c, b.price(1000, "usd"))
        with pytest.raises(ValueError, match="eur"):
            b.apply_coupon(s, b.coupon(amount_off=100, currency="eur"))
