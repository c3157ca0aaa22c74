"""One way to cut [start, end) into periods, for every /v1/metrics answer."""

from __future__ import annotations

from datetime import date

import pytest
from fastapi.testclient import TestClient

from service.kit.errors import ApiError
from service.kit.periods import MAX_PERIODS, Interval, floor, periods, shift
from tests.conftest import API_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}
TODAY = date(2025, 6, 18)


def test_range_is_exactly_start_to_end():
    assert periods(date(2025, 1, 15), date(2025, 3, 10), Interval.range, TODAY) == [
        (date(2025, 1, 15), date(2025, 3, 10))
    ]


def test_defaults_end_with_the_current_period():
    months = periods(None, None, Interval.month, TODAY)
    assert (len(months), months[0][0], months[-1]) == (
        12, date(2024, 7, 1), (date(2025, 6, 1), date(2025, 7, 1)),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("start", "end", "interval", "param"),
    [
        (date(2025, 3, 1), date(2025, 1, 1), Interval.month, "end"),
        # Inside one month, but still not a range: refused before rounding.
        (date(2025, 1, 20), date(2025, 1, 10), Interval.month, "end"),
        (date(2025, 1, 15), date(2025, 1, 15), Interval.month, "end"),
        (date(1970, 1, 1), date(1975, 6, 25), Interval.day, "start"),  # 2001 periods
        (date(1969, 12, 31), None, Interval.month, "start"),
        (None, date(2025, 1, 1), Interval.range, "start"),
    ],
)
def test_bad_bounds_are_named(start, end, interval, param):
    with pytest.raises(ApiError) as raised:
        periods(start, end, interval, TODAY)
    assert (raised.value.status_code, raised.value.extra["param"]) == (422, param)


def test_the_limit():
    start = date(2020, 1, 1)
    assert len(periods(start, date(2025, 6, 23), Interval.day, TODAY)) == MAX_PERIODS
    with pytest.raises(ApiError):
        periods(start, date(2025, 6, 24), Interval.day, TODAY)


@pytest.mark.parametrize(
    "params",
    [
        {"start": "2025-01-15", "end": "2025-03-10", "interval": "month"},
        {"start": "2025-01-01", "end": "2025-01-14", "interval": "week"},
        {"start": "2024-11-05", "end": "2025-04-01", "interval": "quarter"},
        {"start": "2025-02-27", "end": "2025-03-02", "interval": "day"},
        {"start": "2024-06-30", "end": "2025-01-02", "interval": "year"},
    ],
)
def test_recovery_and_churn_answer_the_same_periods(client: TestClient, params: dict):
    churn = client.get("/v1/metrics/churn", params=params, headers=AUTH).json()
    recovery = client.get("/v1/metrics/recovery", params=params, headers=AUTH).json()
    assert [p["period_start"] for p in recovery["data"]] == [
        p["period_start"] for p in churn["data"]
    ]
    assert [p["period_end"] for p in recovery["data"]] == [p["period_end"] for p in churn["data"]]
    assert (recovery["start"], recovery["end"]) == (churn["start"], churn["end"])
    if params["interval"] == "month":
        assert recovery["start"] == "2025-01-01"  # not the 15th


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"start": "2025-03-01", "end": "2025-01-01"}, "end"),
        ({"start": "2025-01-20", "end": "2025-01-10"}, "end"),
        ({"start": "1970-01-01", "end": "1975-06-25", "interval": "day"}, "start"),
        ({"start": "0001-01-01"}, "start"),
        ({"interval": "fortnight"}, "interval"),
    ],
)
def test_recovery_and_churn_refuse_alike(client: TestClient, params: dict, param: str):
    for path in ("/v1/metrics/churn", "/v1/metrics/recovery"):
        response = client.get(path, params=params, headers=AUTH)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"]["param"] == param, path


def test_range_is_for_recovery_only(client: TestClient):
    params = {"start": "2025-01-15", "end": "2025-03-10", "interval": "range"}
    [whole] = client.get("/v1/metrics/recovery", params=params, headers=AUTH).json()["data"]
    assert (whole["period_start"], whole["period_end"]) == ("2025-01-15", "2025-03-10")
    refused = client.get("/v1/metrics/churn", params=params, headers=AUTH)
    assert (refused.status_code, refused.json()["error"]["param"]) == (422, "interval")
    assert "'range'" not in refused.json()["error"]["message"]


def test_a_range_has_no_calendar():
    with pytest.raises(ValueError, match="range"):
        floor(date(2025, 1, 15), Interval.range)
    with pytest.raises(ValueError, match="range"):
        shift(date(2025, 1, 15), Interval.range)
