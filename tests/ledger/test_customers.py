"""GET /v1/customers: search, sort, cursor pages and CSV over the live ledger, on both engines."""

from __future__ import annotations

import csv
import io
import itertools
from datetime import UTC, date, datetime, timedelta

from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from service.ledger import service
from service.ledger.models import LedgerCustomer
from service.ledger.schemas import CustomerSort
from service.settings import LedgerOptions
from tests.conftest import API_KEY
from tests.factories import item, price_payload
from tests.ledger.scenario import Scenario, day
from tests.metrics.scenario import Step, add_series

AUTH = {"Authorization": f"Bearer {API_KEY}"}
D0 = date(2025, 1, 1)
_accounts = itertools.count()


def _customer(session: Session, account: str, customer: str, series: dict[str, list[Step]]):
    first = min((s.day for steps in series.values() for s in steps if s.mrr > 0), default=None)
    session.add(LedgerCustomer(account=account, customer_id=customer, first_mrr_day=first))
    for currency, steps in series.items():
        add_series(session, customer, steps, currency=currency, account=account)


def _steps(mrrs: list[int], rate: str | None = "1") -> list[Step]:
    return [Step(D0 + timedelta(days=7 * n), mrr, rate) for n, mrr in enumerate(mrrs)]


def _pages(client: TestClient, **params) -> list[dict]:
    """Every page, following next_cursor; a page never holds more than `limit` rows."""
    rows, cursor = [], None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = client.get("/v1/customers", params=query, headers=AUTH)
        assert response.status_code == 200, response.text
        body = response.json()
        assert len(body["data"]) <= params.get("limit", 100)
        rows += body["data"]
        if not body["has_more"]:
            assert body["next_cursor"] is None
            return rows
        cursor = body["next_cursor"]


# Each customer: a list of weekly MRR values (cents) in usd, ending anywhere (0 = churned).
histories = st.lists(st.lists(st.integers(0, 50_000), min_size=1, max_size=5), max_size=12)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    ledger=histories,
    sort=st.sampled_from(["mrr_desc", "mrr_asc", "customer_id"]),
    limit=st.integers(1, 5),
    search=st.sampled_from([None, "1", "cus_00"]),
    active=st.sampled_from([None, True, False]),
)
def test_pages_are_the_sorted_filtered_ledger(
    client: TestClient, db_session: Session, ledger, sort, limit, search, active
):
    account = f"acct_cust_{next(_accounts)}"  # a fresh account per example: no cleanup
    expected: dict[str, int] = {}
    for n, mrrs in enumerate(ledger):
        customer = f"cus_{n:04d}"  # fixed width: the same order in every collation
        _customer(db_session, account, customer, {"usd": _steps(mrrs)})
        expected[customer] = mrrs[-1]
    db_session.flush()

    params = {"account": account, "sort": sort, "limit": limit}
    if search:
        params["q"] = search
    if active is not None:
        params["active"] = str(active).lower()
    got = _pages(client, **params)

    kept = {
        c: m
        for c, m in expected.items()
        if (not search or search in c) and (active is None or (m > 0) == active)
    }
    key = {
        "mrr_desc": lambda c: (-kept[c], c),
        "mrr_asc": lambda c: (kept[c], c),
        "customer_id": lambda c: c,
    }[sort]
    assert [r["customer_id"] for r in got] == sorted(kept, key=key)
    assert {r["customer_id"]: r["mrr"]["amount"] for r in got} == kept


class TestCustomers:
    def test_mrr_per_currency_and_in_the_reporting_currency(self, client, db_session):
        account = "acct_fx"
        _customer(
            db_session,
            account,
            "cus_eu",
            {"usd": _steps([1000, 3000]), "eur": _steps([2000], rate="1.5")},
        )
        # A row with no FX rate is left out of the reporting MRR, as /v1/metrics leaves it.
        _customer(db_session, account, "cus_jp", {"jpy": _steps([5000], rate=None)})
        db_session.flush()
        rows = _pages(client, account=account)
        page = client.get("/v1/customers", params={"account": account}, headers=AUTH).json()
        assert page["unconverted_currencies"] == ["jpy"]
        assert [r["customer_id"] for r in rows] == ["cus_eu", "cus_jp"]
        eu, jp = rows
        assert eu["mrr"] == {"amount": 6000, "currency": "usd", "display": "60.00"}
        assert [(m["currency"], m["amount"], m["display"]) for m in eu["mrr_by_currency"]] == [
            ("eur", 2000, "20.00"),
            ("usd", 3000, "30.00"),
        ]
        assert eu["last_movement"] == "expansion"
        assert eu["first_mrr_day"] == D0.isoformat()
        assert jp["mrr"]["amount"] == 0
        assert jp["mrr_by_currency"] == [{"amount": 5000, "currency": "jpy", "display": "5000"}]

    def test_search_is_case_insensitive_and_literal(self, client, db_session):
        account = "acct_search"
        for customer in ("cus_Alpha", "cus_beta", "cus_50%off"):
            _customer(db_session, account, customer, {"usd": _steps([100])})
        db_session.flush()
        found = [r["customer_id"] for r in _pages(client, account=account, q="ALPHA")]
        assert found == ["cus_Alpha"]
        # % is a character to find, not a LIKE wildcard.
        assert [r["customer_id"] for r in _pages(client, account=account, q="%")] == ["cus_50%off"]
        assert _pages(client, account=account, q="c_s") == []  # "_" is no wildcard either

    def test_csv_holds_every_matching_customer(self, client, db_session):
        account = "acct_csv"
        for n in range(7):
            _customer(db_session, account, f"cus_{n}", {"usd": _steps([100 * (n + 1)])})
        db_session.flush()
        response = client.get(
            "/v1/customers", params={"account": account, "format": "csv", "limit": 2},
            headers=AUTH,
        )  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert [r["customer_id"] for r in rows] == [f"cus_{n}" for n in range(6, -1, -1)]
        assert rows[0]["mrr"] == "700" and rows[0]["mrr_display"] == "7.00"
        assert rows[0]["mrr_by_currency"] == "7.00 usd"
        # The same through Accept, as BI tools ask.
        accepted = client.get(
            "/v1/customers", params={"account": account}, headers={**AUTH, "Accept": "text/csv"}
        )
        assert accepted.text == response.text

    def test_export_reads_past_one_chunk(self, db_session):
        account = "acct_chunks"
        for n in range(5):
            _customer(db_session, account, f"cus_{n}", {"usd": _steps([100 + n])})
        db_session.flush()
        rows = service.all_customers(
            db_session, LedgerOptions(), account, search=None, sort=CustomerSort.mrr_asc,
            active=None, cursor=None, chunk=2,
        )  # fmt: skip
        assert [r.customer_id for r in rows] == [f"cus_{n}" for n in range(5)]

    def test_projected_customer_is_listed(self, client, db_session):
        s = Scenario(db_session)
        s.sub("created", day(0))
        s.sub("updated", day(10), items=[item(price_payload(id="price_99", unit_amount=9900))])
        s.run()
        page = client.get("/v1/customers", headers=AUTH).json()
        [row] = page["data"]
        assert (row["customer_id"], row["mrr"]["amount"]) == ("cus_1", 9900)
        detail = client.get("/v1/customers/cus_1", headers=AUTH).json()
        assert row["mrr_by_currency"] == detail["mrr"]
        # As of the newest projected event: the upgrade on day 10.
        newest = datetime.fromtimestamp(day(10), UTC)
        assert datetime.fromisoformat(page["as_of"]) == newest
        assert datetime.fromisoformat(detail["as_of"]) == newest

    def test_bad_input_is_4xx(self, client, db_session):
        _customer(db_session, "", "cus_1", {"usd": _steps([100])})
        _customer(db_session, "", "cus_2", {"usd": _steps([200])})
        db_session.flush()
        page = client.get("/v1/customers", params={"limit": 1}, headers=AUTH).json()
        # A cursor of the mrr order is not one of the customer_id order.
        wrong = client.get(
            "/v1/customers", params={"cursor": page["next_cursor"], "sort": "customer_id"},
            headers=AUTH,
        )  # fmt: skip
        assert wrong.status_code == 422
        assert wrong.json()["error"]["type"] == "invalid_request"
        for params in ({"cursor": "garbage!"}, {"sort": "name"}, {"limit": 0}, {"q": "a\x00"}):
            answer = client.get("/v1/customers", params=params, headers=AUTH)
            assert answer.status_code in (400, 422), (params, answer.text)
            assert "error" in answer.json()
        assert client.get("/v1/customers").status_code == 401
