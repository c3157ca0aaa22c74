"""Properties over generated ledgers: the movement identity in every period, and customer
turnover and customer-days checked against a brute-force count per customer and day."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from jobs.metrics.refresh import refresh
from tests.conftest import API_KEY
from tests.metrics.scenario import Step, add_series

AUTH = {"Authorization": f"Bearer {API_KEY}"}
BASE = date(2025, 1, 1)
_accounts = itertools.count()

steps = st.lists(
    st.tuples(st.integers(0, 180), st.sampled_from([0, 0, 1000, 2500, 4900, 12000])),
    min_size=1,
    max_size=8,
)
series = st.tuples(
    st.sampled_from(["usd", "usd", "eur", "jpy"]),
    st.sampled_from(["1", "1.1", "0.0067", None]),
    steps,
)
ledgers = st.lists(st.lists(series, min_size=1, max_size=2), min_size=0, max_size=8)


def _steps(raw: list[tuple[int, int]], rate: str | None) -> list[Step]:
    out, before = [], 0
    for offset, mrr in sorted(dict(raw).items()):
        if mrr != before:  # no change, no ledger row
            out.append(Step(BASE + timedelta(days=offset), mrr, rate=rate))
            before = mrr
    return out


def _active(history: dict[str, list[list[Step]]], customer: str, boundary: date) -> bool:
    """Brute force: any series of the customer with MRR > 0 after the days before it."""
    for steps_ in history[customer]:
        last = [s.mrr for s in steps_ if s.day < boundary]
        if last and last[-1] > 0:
            return True
    return False


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ledger=ledgers,
    interval=st.sampled_from(["day", "week", "month", "quarter", "year"]),
    # Before the query's end too: exposure stops at the refresh's `through`.
    today=st.dates(date(2025, 2, 1), date(2025, 8, 31)),
)
def test_identity_and_turnover(
    client: TestClient, db_session: Session, ledger: list, interval: str, today: date
):
    account = f"acct_prop_{next(_accounts)}"  # a fresh account per example: no cleanup
    history: dict[str, list[list[Step]]] = {}
    converted = 0
    written: list[date] = []  # every ledger day, converted or not: the refresh's `through`
    for n, customer_series in enumerate(ledger):
        customer = f"cus_{n}"
        for currency, rate, raw in {s[0]: s for s in customer_series}.values():
            built = _steps(raw, rate)
            if built:
                add_series(db_session, customer, built, currency=currency, account=account)
                written += [s.day for s in built]
                # A series without an FX rate is left out of every count, as of MRR.
                if rate is not None:
                    history.setdefault(customer, []).append(built)
                    converted += 1
    db_session.flush()
    refresh(db_session, accounts=[account], today=today)
    last_day = max(written, default=today)
    through = max(today, last_day)

    params = {"account": account, "start": "2025-01-01", "end": "2025-08-01",
              "interval": interval}  # fmt: skip
    moves = client.get("/v1/metrics/movements", params=params, headers=AUTH).json()["data"]
    churn = client.get("/v1/metrics/churn", params=params, headers=AUTH).json()["data"]
    flows = ["new_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr", "reactivation_mrr"]
    previous_end = 0
    for row, c in zip(moves, churn, strict=True):
        total = sum(row[f]["amount"] for f in flows)
        assert row["mrr_end"]["amount"] == row["mrr_start"]["amount"] + total
        assert row["mrr_start"]["amount"] == previous_end
        previous_end = row["mrr_end"]["amount"]
        assert row["new_mrr"]["amount"] >= 0 and row["churned_mrr"]["amount"] <= 0
        start, end = date.fromisoformat(c["period_start"]), date.fromisoformat(c["period_end"])
        at_start = {k for k in history if _active(history, k, start)}
        at_end = {k for k in history if _active(history, k, end)}
        assert (c["customers_start"], c["customers_end"]) == (len(at_start), len(at_end))
        assert c["customers_lost"] == len(at_start - at_end)
        assert c["customers_gained"] == len(at_end - at_start)
        assert c["mrr_start"] == row["mrr_start"]
        exposure = sum(
            len({k for k in history if _active(history, k, day)})
            for day in _days(start, min(end, through + timedelta(days=1)))
        )
        assert c["customer_days"] == exposure


def _days(first: date, end: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((end - first).days)]
