"""The key-path comparison flags what it should (else the builder checks prove nothing)."""

from __future__ import annotations

import copy

import pytest

from tests.factories import subscription_payload
from tests.stripe_shapes import recordings
from tests.stripe_shapes import test_builder_shapes as builder_shapes
from tests.stripe_shapes.keypaths import Difference, key_paths, null_paths, shape_differences
from tests.stripe_shapes.test_builder_shapes import Case


def test_key_paths_name_list_elements_and_types():
    paths = key_paths({"a": {"b": [1, "x"]}, "c": None, "d": 2.5, "e": True})
    assert paths == {
        "": {"object"},
        "a": {"object"},
        "a.b": {"array"},
        "a.b[]": {"integer", "string"},
        "c": {"null"},
        "d": {"number"},
        "e": {"boolean"},
    }


def test_identical_payloads_do_not_differ():
    recorded = recordings.load("current", "subscription")
    assert shape_differences(recorded, recorded) == []


def test_a_period_moved_to_the_subscription_is_flagged():
    """The basil change itself: `current_period_end` back on the subscription is caught."""
    built = subscription_payload(shape="current")
    built["current_period_end"] = built["items"]["data"][0].pop("current_period_end")
    found = shape_differences(built, recordings.load("current", "subscription"))
    assert Difference("current_period_end", "missing", ("integer",), ()) in found


def test_a_legacy_period_moved_onto_the_item_is_flagged():
    built = subscription_payload(shape="legacy")
    built["items"]["data"][0]["current_period_start"] = built.pop("current_period_start")
    found = shape_differences(built, recordings.load("legacy", "subscription"))
    assert [d.path for d in found if "current_period" in d.path] == [
        "items.data[].current_period_start"
    ]


def test_a_changed_json_type_is_flagged():
    recorded = recordings.load("legacy", "price")
    built = copy.deepcopy(recorded)
    built["unit_amount"] = "2000"
    assert shape_differences(built, recorded) == [
        Difference("unit_amount", "type", ("string",), ("integer",))
    ]


def test_null_needs_a_nullable_field():
    recorded = recordings.load("legacy", "subscription")
    built = copy.deepcopy(recorded)
    built["trial_end"] = None
    assert [d.path for d in shape_differences(built, recorded)] == ["trial_end"]
    assert shape_differences(built, recorded, nullable={"trial_end"}) == []


def test_nothing_is_claimed_under_a_recorded_null():
    """legacy charge: `outcome` is null in the recording, so its fields are unknown."""
    recorded = recordings.load("legacy", "charge")
    built = copy.deepcopy(recorded)
    built["outcome"] = {"reason": "insufficient_funds"}
    assert shape_differences(built, recorded) == []


def test_an_id_for_an_expandable_object():
    recorded = {"customer": {"id": "cus_1", "object": "customer"}}
    assert [d.kind for d in shape_differences({"customer": "cus_1"}, recorded)] == ["type"]
    assert shape_differences({"customer": "cus_1"}, recorded, expandable={"customer"}) == []


def test_null_paths_collects_nulls_of_every_payload():
    assert null_paths({"a": None}, {"b": {"c": None}}) == {"a", "b.c"}


def test_the_builder_check_fails_on_a_moved_field():
    def moved() -> dict:
        built = subscription_payload(shape="current")
        built["current_period_start"] = built["items"]["data"][0].pop("current_period_start")
        return built

    case = Case(
        "subscription",
        "current",
        moved,
        lambda: recordings.load("current", "subscription"),
        {"items.total_count": ""},
    )
    with pytest.raises(AssertionError, match="current_period_start: not in the recording"):
        builder_shapes.test_builder_matches_recording(case)


def test_the_builder_check_fails_when_a_known_difference_is_gone():
    case = Case(
        "coupon",
        "legacy",
        lambda: recordings.load("legacy", "coupon"),
        lambda: recordings.load("legacy", "coupon"),
        {"name": "no longer true"},
    )
    with pytest.raises(AssertionError, match="no longer found"):
        builder_shapes.test_builder_matches_recording(case)
