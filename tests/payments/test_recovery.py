"""Recovery metrics for a fixed multi-customer scenario, computed by hand (design §6)."""

from __future__ import annotations

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.kit.periods import Interval, periods
from service.ledger.fx import FxQuote
from service.ledger.repository import LedgerRepository
from service.payments.recovery import nearest_rank, ratio
from tests.conftest import API_KEY
from tests.ledger.scenario import day
from tests.payments.scenario import PaymentScenario

AUTH = {"Authorization": f"Bearer {API_KEY}"}
URL = "/v1/metrics/recovery?start=2025-01-01&end=2025-03-01&interval=month"


def usd(amount: int) -> dict:
    sign = "-" if amount < 0 else ""
    return {"amount": amount, "currency": "usd", "display": f"{sign}{abs(amount) // 100}.00"}


def build(s: PaymentScenario) -> None:
    """Eight customers, subscribed on 2024-12-01; day(n, h) is 2025-01-01 + n days, h:00."""
    start = day(-31, 0)

    def customer(key: str, amount: int, currency: str = "usd") -> dict:
        s.subscribe(
            start, sub=f"sub_{key}", customer=f"cus_{key}", amount=amount, currency=currency
        )
        return {
            "id": f"in_{key}1",
            "customer": f"cus_{key}",
            "subscription": f"sub_{key}",
            "amount_due": amount,
            "currency": currency,
        }

    def decline(at: int, inv: dict, code: str, n: int = 1) -> None:
        charge = {"customer": inv["customer"], "amount": inv["amount_due"]}
        s.charge_failed(
            at, id=f"ch_{inv['id']}_{n}", currency=inv["currency"], decline_code=code, **charge
        )

    # a: fails Jan 5 10:00, paid Jan 7 10:00 on attempt 2: 2 days = 172800 s
    a = customer("a", 10000)
    s.fail(day(4, 10), 1, **a)
    decline(day(4, 10) + 1, a, "insufficient_funds")
    s.paid(day(6, 10), 2, **a)
    # b: fails Jan 10 and Jan 15, paid Jan 20 on attempt 3: 10 days = 864000 s
    b = customer("b", 5000)
    s.fail(day(9, 0), 1, **b)
    decline(day(9, 0) + 1, b, "insufficient_funds")
    s.fail(day(14, 0), 2, **b)
    decline(day(14, 0) + 1, b, "insufficient_funds", 2)
    s.paid(day(19, 0), 3, **b)
    # c: fails Jan 28 12:00, paid Feb 3 12:00 on attempt 2: 6 days = 518400 s, counts for Jan
    c = customer("c", 3000)
    s.fail(day(27, 12), 1, **c)
    decline(day(27, 12), c, "expired_card")
    s.paid(day(33, 12), 2, **c)
    # d: fails 4 times from Jan 15; the customer cancels on Feb 10 while it is open: lost,
    # and involuntary churn of 8000 in February although the cancellation was requested
    d = customer("d", 8000)
    for n, at in enumerate([day(14, 0), day(17, 0), day(22, 0), day(29, 0)], start=1):
        s.fail(at, n, **d)
    decline(day(14, 0) + 1, d, "do_not_honor")
    details = {"reason": "cancellation_requested", "feedback": None, "comment": None}
    s.sub("deleted", day(40, 0), id="sub_d", customer="cus_d", status="canceled",
          ended_at=day(40, 0), cancellation_details=details)  # fmt: skip
    # e: fails Jan 30, still open (no charge event: decline code unknown)
    e = customer("e", 2000)
    s.fail(day(29, 0), 1, day(100, 0), **e)
    # f: no failed payment; cancels on Feb 14: voluntary churn of 7000
    customer("f", 7000)
    s.sub("deleted", day(44, 0), id="sub_f", customer="cus_f", status="canceled",
          ended_at=day(44, 0), cancellation_details=details)  # fmt: skip
    # g: fails Feb 5, voided Feb 6: lost 4000
    g = customer("g", 4000)
    s.fail(day(35, 0), 1, **g)
    s.invoice("voided", day(36, 0), status="void", voided_at=day(36, 0), **g)
    # h: EUR 50.00 (at 1.1: 5500 USD cents) fails Feb 20, paid Feb 21 on attempt 2: 86400 s
    h = customer("h", 5000, "eur")
    s.fail(day(50, 0), 1, **h)
    decline(day(50, 0) + 1, h, "generic_decline")
    s.paid(day(51, 0), 2, **h)


@pytest.fixture
def scenario(db_session: Session) -> PaymentScenario:
    LedgerRepository(db_session).upsert_fx_rates(
        "usd", [FxQuote("eur", date(2024, 12, 1), Decimal("1.1"))]
    )
    s = PaymentScenario(db_session)
    build(s)
    s.run()
    return s


JANUARY = {
    "period_start": "2025-01-01",
    "period_end": "2025-02-01",
    # started in January: a, b, c, d, e
    "failed_invoices": 5,
    "failed_amount": usd(28000),  # 10000 + 5000 + 3000 + 8000 + 2000
    "recovered_invoices": 3,  # a, b, and c (paid in February)
    "recovered_amount": usd(18000),  # 10000 + 5000 + 3000
    "recovery_rate_by_count": 0.6,  # 3 / 5
    "recovery_rate_by_amount": 0.642857,  # 18000 / 28000 = 0.6428571…
    "open_invoices": 1,  # e
    "open_amount": usd(2000),
    "lost_invoices": 1,  # d
    "lost_amount": usd(8000),
    # recovery times [172800, 518400, 864000]: rank ⌈0.5 × 3⌉ = 2 and ⌈0.9 × 3⌉ = 3
    "median_time_to_recover_s": 518400,
    "p90_time_to_recover_s": 864000,
    "recovered_on_attempt": [
        {"attempt": 2, "invoices": 2, "amount": usd(13000)},  # a + c
        {"attempt": 3, "invoices": 1, "amount": usd(5000)},  # b
    ],
    # open at Feb 1 00:00: c (until Feb 3), d (until Feb 10), e: 3000 + 8000 + 2000
    "mrr_at_risk": usd(13000),
    "subscriptions_at_risk": 3,
    "involuntary_churned_mrr": usd(0),
    "voluntary_churned_mrr": usd(0),
    "decline_codes": [  # most failed first, then by code (unknown first)
        {
            "decline_code": "insufficient_funds",  # a, b
            "failed_invoices": 2,
            "failed_amount": usd(15000),
            "recovered_invoices": 2,
            "recovered_amount": usd(15000),
            "lost_invoices": 0,
            "recovery_rate_by_count": 1.0,
            "recovery_rate_by_amount": 1.0,
        },
        {
            "decline_code": None,  # e
            "failed_invoices": 1,
            "failed_amount": usd(2000),
            "recovered_invoices": 0,
            "recovered_amount": usd(0),
            "lost_invoices": 0,
            "recovery_rate_by_count": 0.0,
            "recovery_rate_by_amount": 0.0,
        },
        {
            "decline_code": "do_not_honor",  # d
            "failed_invoices": 1,
            "failed_amount": usd(8000),
            "recovered_invoices": 0,
            "recovered_amount": usd(0),
            "lost_invoices": 1,
            "recovery_rate_by_count": 0.0,
            "recovery_rate_by_amount": 0.0,
        },
        {
            "decline_code": "expired_card",  # c
            "failed_invoices": 1,
            "failed_amount": usd(3000),
            "recovered_invoices": 1,
            "recovered_amount": usd(3000),
            "lost_invoices": 0,
            "recovery_rate_by_count": 1.0,
            "recovery_rate_by_amount": 1.0,
        },
    ],
    "unconverted_invoices": 0,
}

FEBRUARY = {
    "period_start": "2025-02-01",
    "period_end": "2025-03-01",
    # started in February: g, h
    "failed_invoices": 2,
    "failed_amount": usd(9500),  # 4000 + 5000 EUR × 1.1 = 4000 + 5500
    "recovered_invoices": 1,  # h
    "recovered_amount": usd(5500),
    "recovery_rate_by_count": 0.5,  # 1 / 2
    "recovery_rate_by_amount": 0.578947,  # 5500 / 9500 = 0.5789473…
    "open_invoices": 0,
    "open_amount": usd(0),
    "lost_invoices": 1,  # g, voided
    "lost_amount": usd(4000),
    "median_time_to_recover_s": 86400,  # h alone
    "p90_time_to_recover_s": 86400,
    "recovered_on_attempt": [{"attempt": 2, "invoices": 1, "amount": usd(5500)}],
    # open at Mar 1 00:00: e only (d ended with its subscription on Feb 10)
    "mrr_at_risk": usd(2000),
    "subscriptions_at_risk": 1,
    "involuntary_churned_mrr": usd(-8000),  # d: canceled inside its dunning window
    "voluntary_churned_mrr": usd(-7000),  # f
    "decline_codes": [
        {
            "decline_code": None,  # g
            "failed_invoices": 1,
            "failed_amount": usd(4000),
            "recovered_invoices": 0,
            "recovered_amount": usd(0),
            "lost_invoices": 1,
            "recovery_rate_by_count": 0.0,
            "recovery_rate_by_amount": 0.0,
        },
        {
            "decline_code": "generic_decline",  # h
            "failed_invoices": 1,
            "failed_amount": usd(5500),
            "recovered_invoices": 1,
            "recovered_amount": usd(5500),
            "lost_invoices": 0,
            "recovery_rate_by_count": 1.0,
            "recovery_rate_by_amount": 1.0,
        },
    ],
    "unconverted_invoices": 0,
}


class TestRecoveryMetrics:
    def test_two_months_by_hand(self, client: TestClient, scenario: PaymentScenario):
        response = client.get(URL, headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["currency"], body["interval"], body["account"]) == (
            "usd",
            "month",
            "",
        )
        assert body["as_of"] == "2025-02-21T00:00:00Z"  # h's invoice.paid, the newest event
        assert body["data"] == [JANUARY, FEBRUARY]
        # The envelope every metrics answer shares.
        assert (body["stale"], body["unconverted_currencies"]) == (False, [])

    def test_whole_range_is_the_sum_of_its_months(
        self, client: TestClient, scenario: PaymentScenario
    ):
        body = client.get(URL.replace("month", "range"), headers=AUTH).json()
        [whole] = body["data"]
        assert (whole["failed_invoices"], whole["failed_amount"]) == (7, usd(37500))
        # 4 recovered of 7; 23500 of 37500 = 0.6266666… → 0.626667
        assert (whole["recovery_rate_by_count"], whole["recovery_rate_by_amount"]) == (
            0.571429,
            0.626667,
        )
        # [86400, 172800, 518400, 864000]: ranks ⌈2⌉ = 2 and ⌈3.6⌉ = 4
        assert (whole["median_time_to_recover_s"], whole["p90_time_to_recover_s"]) == (
            172800,
            864000,
        )

    def test_without_fx_rate_counted_but_not_summed(self, db_session: Session, client: TestClient):
        s = PaymentScenario(db_session)
        s.subscribe(day(-31, 0), currency="gbp")
        s.fail(day(3), 1, currency="gbp")
        s.run()
        body = client.get(URL.replace("03-01", "02-01"), headers=AUTH).json()
        [jan] = body["data"]
        assert body["unconverted_currencies"] == ["gbp"]
        assert (jan["failed_invoices"], jan["failed_amount"]["amount"]) == (1, 0)
        assert jan["unconverted_invoices"] == 1
        assert (jan["recovery_rate_by_count"], jan["recovery_rate_by_amount"]) == (0.0, None)

    def test_csv_one_row_per_period(self, client: TestClient, scenario: PaymentScenario):
        response = client.get(URL, headers={**AUTH, "Accept": "text/csv"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [(r["period_start"], r["failed_invoices"], r["failed_amount"]) for r in rows] == [
            ("2025-01-01", "5", "28000"),
            ("2025-02-01", "2", "9500"),
        ]
        assert rows[1]["involuntary_churned_mrr_display"] == "-80.00"
        assert rows[0]["recovery_rate_by_amount"] == "0.642857"
        assert rows[1]["currency"] == "usd"
        assert "decline_codes" not in rows[0]

    def test_empty_period_rates_are_null(self, client: TestClient):
        body = client.get(URL, headers=AUTH).json()
        assert [p["failed_invoices"] for p in body["data"]] == [0, 0]
        assert body["data"][0]["recovery_rate_by_count"] is None
        assert body["data"][0]["median_time_to_recover_s"] is None

    @pytest.mark.parametrize(
        "query",
        [
            "start=2025-03-01&end=2025-01-01",
            "interval=fortnight",
            "start=2000-01-01&end=2025-01-01&interval=day",
            "start=not-a-date",
        ],
    )
    def test_bad_input_is_4xx(self, client: TestClient, query: str):
        response = client.get(f"/v1/metrics/recovery?{query}", headers=AUTH)
        assert response.status_code in (400, 422)
        assert "error" in response.json()

    def test_needs_api_key(self, client: TestClient):
        assert client.get(URL).status_code == 401


class TestArithmetic:
    def test_nearest_rank(self):
        assert nearest_rank([], 50) is None
        assert nearest_rank([7], 90) == 7
        # 10 values: p50 rank 5, p90 rank 9
        values = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5]
        assert (nearest_rank(values, 50), nearest_rank(values, 90)) == (5, 9)

    def test_ratio_is_exact_half_even(self):
        assert ratio(1, 0) is None
        assert ratio(2, 3) == Decimal("0.666667")
        assert ratio(1, 8) == Decimal("0.125000")

    def test_periods_are_whole_calendar_periods(self):
        # The same periods as every /v1/metrics answer: start rounded down to its period's
        # start, end up to a period end (no longer clipped to [start, end)).
        today = date(2025, 6, 1)
        assert periods(date(2025, 1, 15), date(2025, 3, 10), Interval.month, today) == [
            (date(2025, 1, 1), date(2025, 2, 1)),
            (date(2025, 2, 1), date(2025, 3, 1)),
            (date(2025, 3, 1), date(2025, 4, 1)),
        ]
        # 2025-01-01 is a Wednesday: its ISO week starts on Monday 2024-12-30
        assert periods(date(2025, 1, 1), date(2025, 1, 14), Interval.week, today) == [
            (date(2024, 12, 30), date(2025, 1, 6)),
            (date(2025, 1, 6), date(2025, 1, 13)),
            (date(2025, 1, 13), date(2025, 1, 20)),
        ]
        assert periods(date(2024, 11, 5), date(2025, 4, 1), Interval.quarter, today)[1] == (
            date(2025, 1, 1),
            date(2025, 4, 1),
        )
