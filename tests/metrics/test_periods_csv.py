"""CSV of the closed months (GET /v1/periods) and their restatements (GET /v1/restatements):
one line per month (or restatement) and figure, every row streamed, the same conventions
as the other exports. Hand-computed on test_closing's account:

cus_a at 50.00 and cus_b at 30.00 from 1 January 2025; January and February closed with
MRR 80.00; then cus_b's cancellation dated 10 February arrives (evt_late_cancel):
February's MRR at its end becomes 50.00, one customer, churned −30.00 and one churned
customer. January does not change.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert
from sqlalchemy.orm import Session

from service.metrics.models import Restatement
from service.metrics.render import PERIOD_COLUMNS, RESTATEMENT_COLUMNS
from tests.metrics.test_closing import READ, cancel_b, closed  # noqa: F401 (a fixture)

# (metric, kind, at close, now) of each month after the late cancellation, in the
# columns' order: MRR and customers at both ends, the movements, turnover and
# customer-days, then the cohort cells and churn reasons by name.
JANUARY = [
    ("mrr_start", "amount", 0, 0), ("mrr_end", "amount", 8000, 8000),
    ("customers_start", "count", 0, 0), ("customers_end", "count", 2, 2),
    ("new_mrr", "amount", 8000, 8000), ("expansion_mrr", "amount", 0, 0),
    ("contraction_mrr", "amount", 0, 0), ("churned_mrr", "amount", 0, 0),
    ("reactivation_mrr", "amount", 0, 0), ("new_customers", "count", 2, 2),
    ("reactivated_customers", "count", 0, 0), ("churned_customers", "count", 0, 0),
    ("expansions", "count", 0, 0), ("contractions", "count", 0, 0),
    ("unconverted_movements", "count", 0, 0),
    # Customer-days: nobody active at the start of 1 January, both on the 30 days after.
    ("customer_days", "count", 60, 60), ("customers_lost", "count", 0, 0),
    ("customers_gained", "count", 2, 2),
    ("cohort:2025-01:active_customers", "count", 2, 2),
    ("cohort:2025-01:cohort_customers", "count", 2, 2),
    ("cohort:2025-01:cohort_mrr", "amount", 8000, 8000),
    ("cohort:2025-01:initial_mrr", "amount", 8000, 8000),
]  # fmt: skip
FEBRUARY = [
    ("mrr_start", "amount", 8000, 8000), ("mrr_end", "amount", 8000, 5000),
    ("customers_start", "count", 2, 2), ("customers_end", "count", 2, 1),
    ("new_mrr", "amount", 0, 0), ("expansion_mrr", "amount", 0, 0),
    ("contraction_mrr", "amount", 0, 0), ("churned_mrr", "amount", 0, -3000),
    ("reactivation_mrr", "amount", 0, 0), ("new_customers", "count", 0, 0),
    ("reactivated_customers", "count", 0, 0), ("churned_customers", "count", 0, 1),
    ("expansions", "count", 0, 0), ("contractions", "count", 0, 0),
    ("unconverted_movements", "count", 0, 0),
    # 2 × 28 days; then 2 × 10 (1–10 February) + 1 × 18.
    ("customer_days", "count", 56, 38), ("customers_lost", "count", 0, 1),
    ("customers_gained", "count", 0, 0),
    # Not there at the close (no churn then): 0.
    ("churn_reason:voluntary::churned_mrr", "amount", 0, -3000),
    ("churn_reason:voluntary::churns", "count", 0, 1),
    ("cohort:2025-01:active_customers", "count", 2, 1),
    ("cohort:2025-01:cohort_customers", "count", 2, 2),
    ("cohort:2025-01:cohort_mrr", "amount", 8000, 5000),
    ("cohort:2025-01:initial_mrr", "amount", 8000, 8000),
]  # fmt: skip
# The events both months' figures included at the close were created on 1 January.
AS_OF_AT_CLOSE = "2025-01-01T00:00:00Z"
# The newest event now: the cancellation, created on 10 February.
AS_OF_NOW = "2025-02-10T00:00:00Z"


def lines(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text)))


def shown(amount: int, kind: str) -> str:
    """Minor units of usd as the `_display` columns write them: empty for counts."""
    if kind != "amount":
        return ""
    sign = "-" if amount < 0 else ""
    return f"{sign}{abs(amount) // 100}.{abs(amount) % 100:02d}"


def figure(metric: str, kind: str, old: int, new: int) -> list[str]:
    change = new - old
    return [metric, kind, str(old), shown(old, kind), str(new), shown(new, kind), str(change),
            shown(change, kind)]  # fmt: skip


def get_csv(client: TestClient, path: str, **params: Any) -> Any:
    answer = client.get(path, params={"format": "csv", **params}, headers=READ)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    return answer


class TestPeriodsCsv:
    @pytest.mark.usefixtures("closed")
    def test_one_line_per_month_and_figure_at_close_and_now(
        self, client: TestClient, db_session: Session
    ):
        cancel_b(client, db_session)
        listed = client.get("/v1/periods", headers=READ).json()
        closed_at = {p["period"]: p["closed_at"] for p in listed["data"]}
        answer = get_csv(client, "/v1/periods")
        assert answer.headers["content-disposition"] == 'attachment; filename="periods.csv"'
        header, *rows = lines(answer.text)
        assert header == list(PERIOD_COLUMNS) == [
            "period", "period_start", "period_end", "currency", "closed_at", "as_of",
            "restatements", "metric", "kind", "at_close", "at_close_display", "now",
            "now_display", "change", "change_display",
        ]  # fmt: skip
        expected = [
            [month, start, end, "usd", closed_at[month], AS_OF_AT_CLOSE, restated,
             *figure(*f)]
            for month, start, end, restated, figures in (
                ("2025-01", "2025-01-01", "2025-02-01", "0", JANUARY),
                ("2025-02", "2025-02-01", "2025-03-01", "1", FEBRUARY),
            )
            for f in figures
        ]  # fmt: skip
        assert rows == expected
        # The spots a reader checks first, spelled out.
        feb = len(JANUARY)
        assert rows[feb + 1][7:] == ["mrr_end", "amount", "8000", "80.00", "5000", "50.00",
                                     "-3000", "-30.00"]  # fmt: skip
        assert rows[feb + 3][7:] == ["customers_end", "count", "2", "", "1", "", "-1", ""]
        # Times in ISO 8601 with their zone, as the JSON spells them.
        assert all(r[4].endswith("Z") and "T" in r[4] for r in rows)
        assert (answer.headers["x-as-of"], answer.headers["x-stale"]) == (AS_OF_NOW, "false")
        assert answer.headers["x-refreshed-at"].endswith("Z")
        assert answer.headers["x-stale-seconds"] == ""

    @pytest.mark.usefixtures("closed")
    def test_accept_text_csv_answers_the_same(self, client: TestClient):
        by_header = client.get("/v1/periods", headers={**READ, "Accept": "text/csv"})
        assert by_header.status_code == 200
        assert by_header.text == get_csv(client, "/v1/periods").text
        # No cancellation here: February, like January, has no churn reason.
        assert len(lines(by_header.text)) == 1 + 2 * len(JANUARY)

    def test_no_closed_month_is_the_header_alone(self, client: TestClient):
        assert lines(get_csv(client, "/v1/periods").text) == [list(PERIOD_COLUMNS)]

    @pytest.mark.usefixtures("closed")
    def test_json_says_how_fresh(self, client: TestClient, db_session: Session):
        cancel_b(client, db_session)
        for path in ("/v1/periods", "/v1/restatements"):
            answer = client.get(path, headers=READ).json()
            assert (answer["as_of"], answer["stale"], answer["stale_seconds"]) == (
                AS_OF_NOW, False, None,
            ), path  # fmt: skip
            assert answer["refreshed_at"].endswith("Z")


class TestRestatementsCsv:
    @pytest.mark.usefixtures("closed")
    def test_one_line_per_changed_figure_with_the_late_events(
        self, client: TestClient, db_session: Session
    ):
        cancel_b(client, db_session)
        (found,) = client.get("/v1/restatements", headers=READ).json()["data"]
        answer = get_csv(client, "/v1/restatements")
        assert answer.headers["content-disposition"] == ('attachment; filename="restatements.csv"')
        header, *rows = lines(answer.text)
        assert header == list(RESTATEMENT_COLUMNS) == [
            "restatement_id", "period", "period_start", "currency", "detected_at", "metric",
            "kind", "old", "old_display", "new", "new_display", "change", "change_display",
            "event_ids",
        ]  # fmt: skip
        lead = [str(found["id"]), "2025-02", "2025-02-01", "usd", found["detected_at"]]
        changed = [
            ("mrr_end", "amount", 8000, 5000), ("customers_end", "count", 2, 1),
            ("churned_mrr", "amount", 0, -3000), ("churned_customers", "count", 0, 1),
            ("customer_days", "count", 56, 38), ("customers_lost", "count", 0, 1),
            ("churn_reason:voluntary::churned_mrr", "amount", 0, -3000),
            ("churn_reason:voluntary::churns", "count", 0, 1),
            ("cohort:2025-01:active_customers", "count", 2, 1),
            ("cohort:2025-01:cohort_mrr", "amount", 8000, 5000),
        ]  # fmt: skip
        assert rows == [[*lead, *figure(*f), "evt_late_cancel"] for f in changed]
        assert rows[0][4].endswith("Z")
        assert rows[2][7:13] == ["0", "0.00", "-3000", "-30.00", "-3000", "-30.00"]
        assert answer.headers["x-as-of"] == AS_OF_NOW
        # The month filter: February has it, January none.
        assert get_csv(client, "/v1/restatements", period="2025-02").text == answer.text
        january = get_csv(client, "/v1/restatements", period="2025-01").text
        assert lines(january) == [list(RESTATEMENT_COLUMNS)]

    def test_a_bad_month_is_a_json_422_before_any_csv(self, client: TestClient):
        for month in ("2025-13", "2025-2", "feb"):
            answer = client.get(
                "/v1/restatements", params={"format": "csv", "period": month}, headers=READ
            )
            assert answer.status_code == 422, (month, answer.text)
            assert answer.json()["error"]["param"] == "period"

    def test_every_restatement_is_streamed_past_the_read_batch(
        self, client: TestClient, db_session: Session
    ):
        # 2,050 restatements (the export reads 2,000 at a time), two figures each.
        detected = datetime(2025, 3, 1, 12, tzinfo=UTC)
        db_session.execute(
            insert(Restatement),
            [
                {"account": "acct_many", "reporting_currency": "usd",
                 "period": date(2024, 1 + n % 12, 1), "detected_at": detected,
                 "changes": {"new_mrr": [n, n + 1], "mrr_end": [100, 100 - n]},
                 "event_ids": [f"evt_{n}", f"evt_{n}_b"]}
                for n in range(2050)
            ],
        )  # fmt: skip
        db_session.commit()
        text = get_csv(client, "/v1/restatements", account="acct_many").text
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == 4100
        ids = [int(r["restatement_id"]) for r in rows]
        assert ids == sorted(ids) and len(set(ids)) == 2050
        last = rows[-2:]
        assert [(r["metric"], r["old"], r["new"], r["change"]) for r in last] == [
            ("mrr_end", "100", "-1949", "-2049"),
            ("new_mrr", "2049", "2050", "1"),
        ]
        assert {r["event_ids"] for r in last} == {"evt_2049 evt_2049_b"}
        assert (last[0]["period"], last[0]["detected_at"]) == ("2024-10", "2025-03-01T12:00:00Z")
        assert (last[0]["change_display"], last[1]["change_display"]) == ("-20.49", "0.01")
