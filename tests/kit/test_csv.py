"""The one CSV writer's cells."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from service.kit.csv import cell, csv_response


@pytest.mark.parametrize(
    ("value", "text"),
    [(None, ""), (True, "true"), (False, "false"), (0, "0"), (-2500, "-2500"),
     (-1e-06, "-1e-06"), (Decimal("-0.5"), "-0.5"), (date(2025, 1, 2), "2025-01-02"),
     (datetime(2025, 1, 2, tzinfo=UTC), "2025-01-02T00:00:00Z"),
     (datetime(2025, 1, 2, 3), "2025-01-02T03:00:00Z"), ("-80.00", "-80.00"),
     ("-3", "-3"), ("cus_1", "cus_1"), ("", "")],
)  # fmt: skip
def test_values(value: object, text: str):
    assert cell(value) == text


@pytest.mark.parametrize("text", ["=1+1", "+1+1", "-1+1", "@SUM(A1)", "\t=1", "\r=1", "-"])
def test_formulas_are_quoted(text: str):
    assert cell(text) == "'" + text


def test_response():
    response = csv_response(["a", "b"], [["=x", None], [1, True]], filename="x.csv",
                            headers={"X-Stale": "false"})  # fmt: skip
    assert response.body == b"a,b\n'=x,\n1,true\n"
    assert response.media_type == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == 'attachment; filename="x.csv"'
    assert response.headers["x-stale"] == "false"
