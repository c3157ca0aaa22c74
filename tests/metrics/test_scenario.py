"""Every metric of every month of a fixed ten-customer ledger, computed by hand.

The ledger (tests/metrics/scenario.py), amounts in USD cents, MRR after each day:

    c1  basic/month  Jan 5 new 5000 · Mar 10 expansion → 8000                   region=eu
    c2  basic/month  Jan 10 new 5000 · Feb 15 churn (voluntary, too_expensive)
    c3  pro/year     Jan 1 new 20000
    c4  pro/month    Jan 20 new 10000 · Feb 5 contraction → 7000 · Apr 2 churn (involuntary)
    c5  basic/month  Feb 1 new 5000 · Mar 1 churn (voluntary, unused) · Apr 15 reactivation 5000
    c6  pro/year EUR Feb 10 new 9000 EUR = 9900 USD · Apr 20 expansion → 12000 EUR at 1.2:
                     delta_reporting 14400 − 10800 = 3600, so its USD MRR is 13500   region=eu
    c7  basic/month  Jan 15 new 5000 · Jan 25 churn (voluntary, no feedback)
    c8  pro/month    Mar 5 new 10000 · Mar 20 churn (voluntary, switched_service) · Mar 28 back
    c9  basic/month  Jan 3 new 5000 · Feb 10 churn (involuntary) · Feb 20 reactivation 6000
    c10 basic/month  Apr 5 new 5000
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from jobs.metrics.refresh import refresh
from tests.conftest import API_KEY
from tests.metrics.scenario import TODAY, seed_scenario

AUTH = {"Authorization": f"Bearer {API_KEY}"}
SPAN = {"start": "2025-01-01", "end": "2025-05-01"}


@pytest.fixture
def seeded(db_session: Session) -> Session:
    seed_scenario(db_session)
    refresh(db_session, today=TODAY)
    return db_session


def get(client: TestClient, path: str, **params) -> dict:
    response = client.get(f"/v1/metrics/{path}", params={**SPAN, **params}, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def amounts(row: dict) -> dict:
    return {k: v["amount"] if isinstance(v, dict) else v for k, v in row.items()}


def r8(x: Fraction | None) -> float | None:
    return None if x is None else round(float(x), 8)


def monthly(hazard: Fraction) -> Fraction:
    return 1 - (1 - hazard) ** 30


# Movements per month. Jan: new 20000 (c3) + 5000 (c9) + 5000 (c1) + 5000 (c2) + 5000 (c7)
# + 10000 (c4) = 50000, churn −5000 (c7): 0 → 45000.
# Feb: new 5000 (c5) + 9900 (c6) = 14900; contraction −3000 (c4); churn −5000 (c9) − 5000
# (c2); reactivation 6000 (c9): 45000 + 14900 − 3000 − 10000 + 6000 = 52900.
# Mar: new 10000 (c8); expansion 3000 (c1); churn −5000 (c5) − 10000 (c8); reactivation
# 10000 (c8): 52900 + 10000 + 3000 − 15000 + 10000 = 60900.
# Apr: new 5000 (c10); expansion 3600 (c6); churn −7000 (c4); reactivation 5000 (c5):
# 60900 + 5000 + 3600 − 7000 + 5000 = 67500.
MOVEMENTS = [
    # start, new, expansion, contraction, churned, reactivation, end,
    # new / reactivated / churned customers, expansions, contractions
    (0, 50000, 0, 0, -5000, 0, 45000, 6, 0, 1, 0, 0),
    (45000, 14900, 0, -3000, -10000, 6000, 52900, 2, 1, 2, 0, 1),
    (52900, 10000, 3000, 0, -15000, 10000, 60900, 1, 1, 2, 1, 0),
    (60900, 5000, 3600, 0, -7000, 5000, 67500, 1, 1, 1, 1, 0),
]
# Customers at each month end: Jan c1 c2 c3 c4 c9 = 5; Feb c1 c3 c4 c5 c6 c9 = 6;
# Mar c1 c3 c4 c6 c8 c9 = 6; Apr c1 c3 c5 c6 c8 c9 c10 = 7.
CUSTOMERS = [5, 6, 6, 7]


def test_movements_every_month(client: TestClient, seeded: Session):
    body = get(client, "movements")
    assert body["currency"] == "usd"
    assert (body["start"], body["end"], body["unconverted_movements"]) == (
        "2025-01-01", "2025-05-01", 0,
    )  # fmt: skip
    keys = ["mrr_start", "new_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr",
            "reactivation_mrr", "mrr_end", "new_customers", "reactivated_customers",
            "churned_customers", "expansions", "contractions"]  # fmt: skip
    got = [tuple(amounts(row)[k] for k in keys) for row in body["data"]]
    assert got == MOVEMENTS
    assert [row["period_start"] for row in body["data"]] == [
        "2025-01-01", "2025-02-01", "2025-03-01", "2025-04-01",
    ]  # fmt: skip
    assert body["data"][1]["new_mrr"] == {"amount": 14900, "currency": "usd", "display": "149.00"}


def test_mrr_every_month(client: TestClient, seeded: Session):
    body = get(client, "mrr")
    # ARPA = MRR ÷ customers, half up: 45000/5 = 9000; 52900/6 = 8816.67 → 8817;
    # 60900/6 = 10150; 67500/7 = 9642.86 → 9643. ARR = 12 × MRR.
    assert [
        (r["mrr"], r["arr"], r["customers"], r["arpa"]) for r in map(amounts, body["data"])
    ] == [
        (45000, 540000, 5, 9000),
        (52900, 634800, 6, 8817),
        (60900, 730800, 6, 10150),
        (67500, 810000, 7, 9643),
    ]


# Customer-days at risk (customers with MRR > 0 at the start of each day of the month):
# Jan: c3 Jan 2-31 = 30, c9 4-31 = 28, c1 6-31 = 26, c2 11-31 = 21, c7 16-25 = 10,
#      c4 21-31 = 11 → 126; churn events 1 (c7).
# Feb: c1, c3, c4 28 each = 84, c2 Feb 1-15 = 15, c9 1-10 + 21-28 = 18, c5 2-28 = 27,
#      c6 11-28 = 18 → 162; churn events 2 (c9, c2).
# Mar: c1 c3 c4 c6 c9 31 each = 155, c5 Mar 1 = 1, c8 6-20 + 29-31 = 18 → 174; events 2.
# Apr: c1 c3 c6 c8 c9 30 each = 150, c4 1-2 = 2, c10 6-30 = 25, c5 16-30 = 15 → 192; 1.
HAZARD = [Fraction(1, 126), Fraction(2, 162), Fraction(2, 174), Fraction(1, 192)]
DAYS = [126, 162, 174, 192]


def expected_churn() -> list[dict]:
    rows = []
    # CS, CE, CN (active at end not start), lost (active at start not end):
    # Jan 0, 5, 5, 0. Feb 5, 6, 2 (c5 c6), 1 (c2): c9 churned and came back, so it is
    # retained. Mar 6, 6, 1 (c8), 1 (c5). Apr 6, 7, 2 (c10 c5), 1 (c4).
    counts = [(0, 5, 5, 0), (5, 6, 2, 1), (6, 6, 1, 1), (6, 7, 2, 1)]
    for month, (cs, ce, cn, lost) in enumerate(counts):
        start, new, exp, con, chu, rea, end, *_ = MOVEMENTS[month]
        losses, gains = -(chu + con), exp + rea
        rate = lambda n, d: None if d == 0 else Fraction(n, d)  # noqa: E731
        h = HAZARD[month]
        m = monthly(h)
        arpa = Fraction(end, ce)
        net = rate(losses - gains, start)
        rows.append(
            {
                "mrr_start": start, "mrr_end": end, "customers_start": cs,
                "customers_end": ce, "customers_gained": cn, "customers_lost": lost,
                "customer_churn_rate": r8(rate(lost, cs)),
                "customer_retention_rate": r8(rate(ce - cn, cs)),
                "gross_mrr_churn_rate": r8(rate(losses, start)),
                "net_mrr_churn_rate": r8(net),
                "expansion_rate": r8(rate(gains, start)),
                "nrr": r8(None if net is None else 1 - net),
                "grr": r8(None if start == 0 else 1 - rate(losses, start)),
                "quick_ratio": r8(rate(new + gains, losses)),
                "churned_customers": MOVEMENTS[month][9], "customer_days": DAYS[month],
                "churn_hazard": r8(h), "monthly_churn_rate": r8(m),
                "arpa": int(arpa + Fraction(1, 2)), "ltv": int(arpa / m + Fraction(1, 2)),
                "negative_churn": None if net is None else net < 0,
                # Every month's monthly-equivalent churn is above 10 %: high.
                "churn_level": "high",
            }
        )  # fmt: skip
    return rows


def test_churn_every_month(client: TestClient, seeded: Session):
    body = get(client, "churn")
    got = [{k: amounts(r)[k] for k in expected_churn()[0]} for r in body["data"]]
    assert got == expected_churn()
    # Spelled out for the reader: Feb customer churn 1/5, retention (6 − 2)/5, gross MRR
    # churn (10000 + 3000)/45000, net (13000 − 6000)/45000, quick ratio 20900/13000.
    feb = body["data"][1]
    assert (feb["customer_churn_rate"], feb["customer_retention_rate"]) == (0.2, 0.8)
    assert (feb["gross_mrr_churn_rate"], feb["net_mrr_churn_rate"]) == (0.28888889, 0.15555556)
    assert (feb["nrr"], feb["grr"], feb["quick_ratio"]) == (0.84444444, 0.71111111, 1.60769231)
    # April: losses 7000 < gains 3600 + 5000: net −1600/60900, negative churn, NRR > 1.
    apr = body["data"][3]
    assert (apr["net_mrr_churn_rate"], apr["negative_churn"]) == (-0.02627258, True)
    assert apr["nrr"] == 1.02627258
    # January starts from nothing: every rate over MRR or customers at start is null.
    jan = body["data"][0]
    assert jan["customer_churn_rate"] is None and jan["nrr"] is None
    assert jan["negative_churn"] is None and jan["quick_ratio"] == 10.0  # 50000 / 5000


def test_churn_thresholds_and_margin(client: TestClient, seeded: Session):
    # April's monthly-equivalent churn is 1 − (191/192)^30 ≈ 0.145.
    body = get(client, "churn", churn_good_below=0.2, churn_high_above=0.3, gross_margin=0.5)
    levels = [r["churn_level"] for r in body["data"]]
    # Jan 0.2126 (normal), Feb 0.3111 (high), Mar 0.2931 (normal), Apr 0.1450 (good).
    assert levels == ["normal", "high", "normal", "good"]
    apr_ltv = int(Fraction(67500, 7) / monthly(HAZARD[3]) * Fraction(1, 2) + Fraction(1, 2))
    assert body["data"][3]["ltv"]["amount"] == apr_ltv


def test_quarters(client: TestClient, seeded: Session):
    body = get(client, "churn", interval="quarter", end="2025-06-01")
    q1, q2 = body["data"]
    assert (q1["period_start"], q1["period_end"], q2["period_end"]) == (
        "2025-01-01", "2025-04-01", "2025-07-01",
    )  # fmt: skip
    # Q1: 0 → 60900; no customers at start; 6 at the end, all gained; churn events
    # 1 + 2 + 2 over 126 + 162 + 174 customer-days.
    assert amounts(q1)["mrr_end"] == 60900
    assert (q1["customers_start"], q1["customers_end"], q1["customers_gained"]) == (0, 6, 6)
    assert (q1["churned_customers"], q1["customer_days"]) == (5, 462)
    # Q2 so far is April (exposure stops at the refresh day, 30 April).
    assert (q2["customers_lost"], q2["customer_days"]) == (1, 192)
    assert q2["churn_hazard"] == r8(HAZARD[3])


def test_segments_and_filters(client: TestClient, seeded: Session):
    body = get(client, "mrr", segment_by="plan", start="2025-02-01", end="2025-03-01")
    # End of Feb: basic c1 5000 + c5 5000 + c9 6000; pro c3 20000 + c4 7000 + c6 9900.
    assert [(r["segment"], r["mrr"]["amount"], r["customers"]) for r in body["data"]] == [
        ("basic", 16000, 3),
        ("pro", 36900, 3),
    ]
    feb = {"start": "2025-02-01", "end": "2025-03-01"}
    only = lambda **f: amounts(get(client, "mrr", **feb, **f)["data"][0])  # noqa: E731
    assert (only(currency_code="EUR")["mrr"], only(currency_code="eur")["customers"]) == (9900, 1)
    assert only(billing_interval="year")["mrr"] == 29900  # c3 + c6
    assert only(**{"metadata[region]": "eu"})["mrr"] == 14900  # c1 + c6
    assert only(**{"metadata[region]": "None"})["mrr"] == 0  # absent is not the text "None"
    assert only(plan="nope") == {
        "period_start": "2025-02-01", "period_end": "2025-03-01", "segment": None,
        "segment_label": None, "mrr": 0, "arr": 0, "customers": 0, "arpa": None,
    }  # fmt: skip
    by_currency = get(client, "movements", segment_by="currency", **feb)["data"]
    assert [(r["segment"], r["new_mrr"]["amount"]) for r in by_currency] == [
        ("eur", 9900),
        ("usd", 5000),
    ]


def test_churn_reasons(client: TestClient, seeded: Session):
    body = get(client, "churn-reasons")
    got = [
        (r["period_start"][:7], r["reason"], r["feedback"], r["churns"], r["churned_mrr"]["amount"])
        for r in body["data"]
    ]
    assert got == [
        ("2025-01", "voluntary", None, 1, -5000),  # c7
        ("2025-02", "involuntary", None, 1, -5000),  # c9
        ("2025-02", "voluntary", "too_expensive", 1, -5000),  # c2
        ("2025-03", "voluntary", "switched_service", 1, -10000),  # c8
        ("2025-03", "voluntary", "unused", 1, -5000),  # c5
        ("2025-04", "involuntary", None, 1, -7000),  # c4
    ]


def test_cohorts(client: TestClient, seeded: Session):
    body = get(client, "cohorts")
    got = {
        (r["cohort_month"][:7], r["months_since_start"]): (
            r["cohort_customers"], r["initial_mrr"]["amount"], r["active_customers"],
            r["cohort_mrr"]["amount"], r["logo_retention"], r["mrr_retention"],
        )
        for r in body["data"]
    }  # fmt: skip
    assert got == {
        # January: c1 c2 c3 c4 c7 c9, first MRR 5000 + 5000 + 20000 + 10000 + 5000 + 5000.
        # End Jan: all but c7 (45000); Feb: c2 gone, c4 7000, c9 6000 (38000); Mar: c1
        # 8000 (41000); Apr: c4 gone (34000).
        ("2025-01", 0): (6, 50000, 5, 45000, r8(Fraction(5, 6)), 0.9),
        ("2025-01", 1): (6, 50000, 4, 38000, r8(Fraction(4, 6)), 0.76),
        ("2025-01", 2): (6, 50000, 4, 41000, r8(Fraction(4, 6)), 0.82),
        ("2025-01", 3): (6, 50000, 3, 34000, 0.5, 0.68),
        # February: c5 5000 + c6 9900; Mar c5 gone; Apr c5 back and c6 at 13500.
        ("2025-02", 0): (2, 14900, 2, 14900, 1.0, 1.0),
        ("2025-02", 1): (2, 14900, 1, 9900, 0.5, r8(Fraction(9900, 14900))),
        ("2025-02", 2): (2, 14900, 2, 18500, 1.0, r8(Fraction(18500, 14900))),
        # March: c8, churned and back within the month.
        ("2025-03", 0): (1, 10000, 1, 10000, 1.0, 1.0),
        ("2025-03", 1): (1, 10000, 1, 10000, 1.0, 1.0),
        ("2025-04", 0): (1, 5000, 1, 5000, 1.0, 1.0),
    }


def test_weeks_chain_and_add_up_to_the_months(client: TestClient, seeded: Session):
    weeks = get(client, "movements", interval="week")["data"]
    assert weeks[0]["period_start"] == "2024-12-30"  # ISO weeks start on Monday
    for before, after in itertools.pairwise(weeks):
        assert before["mrr_end"] == after["mrr_start"]
    assert sum(w["new_mrr"]["amount"] for w in weeks) == sum(m[1] for m in MOVEMENTS)
    days = get(client, "churn", interval="day", start="2025-02-01", end="2025-03-01")["data"]
    assert sum(d["customer_days"] for d in days) == DAYS[1]
    assert sum(d["customers_lost"] for d in days) == 2  # c9 and c2, as daily events


def test_csv(client: TestClient, seeded: Session):
    response = client.get("/v1/metrics/mrr", params=SPAN, headers={**AUTH, "Accept": "text/csv"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    lines = response.text.splitlines()
    assert lines[0] == (
        "period_start,period_end,segment,segment_label,currency,mrr,mrr_display,arr,"
        "arr_display,customers,arpa,arpa_display"
    )
    assert lines[2] == "2025-02-01,2025-03-01,,,usd,52900,529.00,634800,6348.00,6,8817,88.17"
    assert response.headers["x-stale"] == "false"
    churn = client.get("/v1/metrics/churn", params={**SPAN, "format": "csv"}, headers=AUTH)
    header, jan, *_ = churn.text.splitlines()
    row = dict(zip(header.split(","), jan.split(","), strict=True))
    assert (row["customer_churn_rate"], row["negative_churn"], row["churn_level"]) == (
        "", "", "high",
    )  # fmt: skip
