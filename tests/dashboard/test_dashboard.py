"""The dashboard in headless Chromium against a real uvicorn server on a simulated account:
what the page shows is what the /v1 API answers, the drill-downs reach the ledger rows and
their Stripe event ids, and 401/503 answers leave the page usable.

Screenshots of every view land in test-artifacts/dashboard/ (gitignored).
"""

from __future__ import annotations

import csv
import io
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from service.app import create_app
from service.db import get_session, get_stream_session
from service.settings import Settings
from tests.conftest import API_KEY, WRITE_KEY
from tests.dashboard.browser import (
    chromium,
    migrate,
    require_browser,
    screenshot,
    seed,
    seeded_settings,
)
from tests.factories import DAY, item, price_payload, subscription_payload
from tests.live import live_server
from tests.signing import event_body, signed_headers
from tests.webhooks.test_endpoints import make_event

AUTH = {"Authorization": f"Bearer {API_KEY}"}
VIEWS = ["overview", "churn", "cohorts", "reasons", "payments", "customers", "periods"]


class Live:
    def __init__(self, app: FastAPI, base: str, workdir: Path) -> None:
        self.app = app
        self.base = base
        self.workdir = workdir
        self.api = httpx.Client(base_url=base, headers=AUTH, timeout=30)

    def get(self, path: str, **params: Any) -> Any:
        answer = self.api.get(path, params={k: v for k, v in params.items() if v is not None})
        answer.raise_for_status()
        return answer.json()


@contextmanager
def seeded_live(prefix: str, *, customers: int, months: int, seed_: int) -> Iterator[Live]:
    """A live server on a database of its own, seeded with a simulated account."""
    require_browser()  # before the seeding: a missing browser skips (or fails) at once
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    settings = seeded_settings(workdir)
    migrate(settings)
    app = create_app(settings)
    with live_server(app) as base:
        seed(base, settings, customers=customers, months=months, seed_=seed_)
        server = Live(app, base, workdir)
        try:
            yield server
        finally:
            server.api.close()


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    with seeded_live("churn-ledger-dashboard-", customers=40, months=12, seed_=5) as server:
        yield server


# A second account of its own for the closed months, so that the late events restating
# them change nothing the other tests read from `live`: the simulated account's first three
# months closed, then two subscriptions backdated into March arrive one after the other
# (each a restatement of March: +40.00 and +25.00 new MRR, one new customer each).
CLOSED_MONTHS = ["2024-01", "2024-02", "2024-03"]
MARCH_10 = int(datetime(2024, 3, 10, tzinfo=UTC).timestamp())
LATE = [
    ("evt_late_march_1", "cus_late_1", 4000, MARCH_10),
    ("evt_late_march_2", "cus_late_2", 2500, MARCH_10 + 10 * DAY),
]
PERIOD_FIGURES = ["mrr_start", "new_mrr", "expansion_mrr", "reactivation_mrr",
                  "contraction_mrr", "churned_mrr", "mrr_end", "customers_end"]  # fmt: skip


def wait_for(what: str, done: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {seconds} s")
        time.sleep(0.1)


def deliver_late(http: httpx.Client, event_id: str, customer: str, amount: int, at: int) -> None:
    """A subscription created at `at`, arriving now: a signed webhook as Stripe sends it."""
    event = make_event(
        event_id=event_id,
        obj=subscription_payload(
            id=f"sub_{customer}", customer=customer, created=at, current_period_start=at,
            current_period_end=at + 31 * DAY,
            items=[item(price_payload(id="price_late", unit_amount=amount))],
        ),
    )  # fmt: skip
    event["created"] = at
    body = event_body(event)
    http.post("/webhooks/stripe", content=body, headers=signed_headers(body)).raise_for_status()


@pytest.fixture(scope="module")
def closed_live() -> Iterator[Live]:
    prefix = "churn-ledger-dashboard-closed-"
    with seeded_live(prefix, customers=12, months=4, seed_=11) as server:
        writer = {"Authorization": f"Bearer {WRITE_KEY}"}
        for month in CLOSED_MONTHS:
            server.api.post(f"/v1/periods/{month}/close", headers=writer).raise_for_status()
        for n, late in enumerate(LATE, start=1):
            deliver_late(server.api, *late)
            # The server's own refresh finds each: one restatement apiece.
            wait_for(
                f"restatement {n}", lambda n=n: len(server.get("/v1/restatements")["data"]) == n
            )
        yield server


@pytest.fixture(scope="module")
def context() -> Iterator[Any]:
    # A profile of its own (not a server's workdir): either server's tests may run alone.
    with chromium(Path(tempfile.mkdtemp(prefix="churn-ledger-chromium-")) / "profile") as ctx:
        yield ctx


def _tab(context: Any, live: Live) -> Iterator[Any]:
    tab = context.new_page()  # a new tab: its own sessionStorage, signed out
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    live.app.dependency_overrides.clear()
    tab.close()
    assert errors == [], errors


@pytest.fixture
def page(context: Any, live: Live) -> Iterator[Any]:
    yield from _tab(context, live)


@pytest.fixture
def closed_page(context: Any, closed_live: Live) -> Iterator[Any]:
    yield from _tab(context, closed_live)


def sign_in(page: Any, live: Live, key: str = API_KEY) -> None:
    page.goto(live.base + "/")
    page.wait_for_selector("#api-key")
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")
    if key == API_KEY:
        page.wait_for_selector("main[data-loaded='overview']")


def open_view(page: Any, live: Live, route: str) -> None:
    view = route.split("/")[0].split("?")[0]
    page.evaluate("delete document.querySelector('main').dataset.loaded")
    target = f"{live.base}/dashboard#/{route}"
    if page.url == target:
        page.reload()  # the same hash again fires no hashchange: load the page anew
    else:
        page.goto(target)
    page.wait_for_selector(f"main[data-loaded='{view}'], main[data-loaded='error']")
    assert page.get_attribute("main", "data-loaded") == view, page.inner_text("#banner")


def window(page: Any) -> dict[str, str]:
    """The period the page's filters show: the API is asked the same."""
    form = {n: page.input_value(f"#filters [name={n}]") for n in ("interval", "start", "end")}
    return form


def usd(amount: int) -> str:
    """Intl's en-US currency format for usd minor units."""
    sign = "-" if amount < 0 else ""
    return f"{sign}${abs(amount) // 100:,}.{abs(amount) % 100:02d}"


def pct(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def cells(page: Any, table: str, col: str) -> list[str]:
    return page.eval_on_selector_all(
        f"#{table} tbody td[data-col='{col}']", "els => els.map(e => e.innerText.trim())"
    )


def amounts(page: Any, table: str, col: str) -> list[int]:
    return [
        int(v)
        for v in page.eval_on_selector_all(
            f"#{table} tbody td[data-col='{col}'] [data-amount]",
            "els => els.map(e => e.dataset.amount)",
        )
    ]


class TestServing:
    def test_root_redirects_and_the_page_loads_nothing_from_elsewhere(self, client: TestClient):
        root = client.get("/", follow_redirects=False)
        assert root.status_code == 307 and root.headers["location"] == "/dashboard"
        page = client.get("/dashboard")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert refs and all(r.startswith(("/dashboard/", "#")) for r in refs), refs
        static = Path(__file__).resolve().parents[2] / "service" / "dashboard" / "static"
        for f in static.iterdir():
            answer = client.get(f"/dashboard/static/{f.name}")
            assert answer.status_code == 200, f.name
            assert "default-src 'self'" in answer.headers["content-security-policy"]
            # No other host anywhere in the files: every import and fetch is same-origin.
            assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", answer.text), f.name
        assert client.get("/dashboard/static/../app.py").status_code == 404

    def test_the_dashboard_is_not_part_of_the_api_contract(self, client: TestClient):
        paths = client.get("/openapi.json").json()["paths"]
        assert not any(p == "/" or p.startswith("/dashboard") for p in paths)


class TestSignIn:
    def test_key_stays_in_the_tab_and_out_of_urls(self, page, live):
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        sign_in(page, live)
        assert page.evaluate("sessionStorage.getItem('churn-ledger.api-key')") == API_KEY
        assert page.evaluate("localStorage.length") == 0
        assert API_KEY not in page.url
        assert requests and not any(API_KEY in u for u in requests)
        assert all(u.startswith(live.base) for u in requests), "nothing from another host"
        page.click("#sign-out")
        assert page.is_visible("#sign-in")
        assert page.evaluate("sessionStorage.length") == 0

    def test_a_wrong_key_is_refused_on_the_form(self, page, live):
        sign_in(page, live, key="not-a-key")
        page.wait_for_selector("#sign-in-error:not([hidden])")
        assert "401" in page.inner_text("#sign-in-error")
        assert page.evaluate("sessionStorage.length") == 0
        assert page.is_hidden("#nav")


def check_views(page: Any, live: Live, views: list[str], suffix: str = "") -> int:
    """Every view at desktop width (CSV links are /v1 URLs, charts say how fresh they are)
    and at phone width (nothing wider than the phone); the charts seen."""
    page.set_viewport_size({"width": 1280, "height": 900})
    charts = 0
    for view in views:
        open_view(page, live, view)
        # Every chart's card says how fresh it is, and CSV links are the /v1 URL.
        for href in page.eval_on_selector_all(
            "a.csv", "els => els.map(e => e.getAttribute('href'))"
        ):
            assert href.startswith("/v1/") and "format=csv" in href, href
        assert page.locator(".as-of").count() >= 1
        chart = "section.card:has(svg.chart, table.heatmap)"
        charts += page.locator(chart).count()
        assert page.locator(f"{chart}:not(:has(a.csv))").count() == 0, view
        assert page.locator(f"{chart}:not(:has(.as-of))").count() == 0, view
        screenshot(page, f"{view}{suffix}-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    for view in views:
        open_view(page, live, view)
        # Nothing wider than the phone: wide tables scroll inside their own box.
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (view, width)
        screenshot(page, f"{view}{suffix}-phone")
    return charts


class TestViews:
    def test_every_view_loads_at_desktop_and_phone_width(self, page, live):
        sign_in(page, live)
        charts = check_views(page, live, VIEWS)
        assert charts >= 10  # the checks above were not about nothing

    def test_overview_equals_the_api(self, page, live):
        sign_in(page, live)
        w = window(page)
        mrr = live.get("/v1/metrics/mrr", **w)
        moves = live.get("/v1/metrics/movements", **w)
        assert any(r["mrr"]["amount"] for r in mrr["data"]), "the seeded account has MRR"
        assert amounts(page, "mrr-table", "mrr") == [r["mrr"]["amount"] for r in mrr["data"]]
        assert cells(page, "mrr-table", "mrr") == [usd(r["mrr"]["amount"]) for r in mrr["data"]]
        assert amounts(page, "mrr-table", "arr") == [r["arr"]["amount"] for r in mrr["data"]]
        assert cells(page, "mrr-table", "customers") == [str(r["customers"]) for r in mrr["data"]]
        last = mrr["data"][-1]
        assert page.inner_text("[data-kpi='mrr'] .value") == usd(last["mrr"]["amount"])
        assert page.inner_text("[data-kpi='customers'] .value") == str(last["customers"])
        for key in ("mrr_start", "new_mrr", "expansion_mrr", "reactivation_mrr",
                    "contraction_mrr", "churned_mrr", "mrr_end"):  # fmt: skip
            assert amounts(page, "identity-table", key) == [r[key]["amount"] for r in moves["data"]]
        assert set(cells(page, "identity-table", "identity")) == {"✓ holds"}
        # The stacked bars carry the same amounts.
        churn_bars = page.eval_on_selector_all(
            "#card-movements rect[data-series='Churn']", "els => els.map(e => +e.dataset.value)"
        )
        assert churn_bars == [
            r["churned_mrr"]["amount"] for r in moves["data"] if r["churned_mrr"]["amount"]
        ]
        assert (
            page.inner_text("#card-mrr .as-of")
            == "as of "
            + mrr["as_of"].replace("T", " ").removesuffix("Z").split("+")[0].split(".")[0]
            + " UTC"
        )

    def test_filters_reach_the_api(self, page, live):
        expect = require_browser().expect
        sign_in(page, live)
        page.select_option("#filters [name=interval]", "quarter")
        page.click("#filters button[type=submit]")
        page.wait_for_url(re.compile(r"interval=quarter"))
        w = window(page)
        assert w["interval"] == "quarter"
        answer = live.get("/v1/metrics/mrr", **w)
        expect(page.locator("#mrr-table tbody tr")).to_have_count(len(answer["data"]))
        assert cells(page, "mrr-table", "period")[0].endswith("Q1")
        assert amounts(page, "mrr-table", "mrr") == [r["mrr"]["amount"] for r in answer["data"]]
        # A segment the API knows narrows every number to it.
        options = page.eval_on_selector_all(
            "#filters [name=segment] option", "els => els.map(e => e.value).filter(v => v)"
        )
        plan = next(o for o in options if o.startswith("plan:"))
        page.select_option("#filters [name=segment]", plan)
        page.evaluate("delete document.querySelector('main').dataset.loaded")
        page.click("#filters button[type=submit]")
        page.wait_for_selector("main[data-loaded='overview']")
        narrowed = live.get("/v1/metrics/mrr", **w, plan=plan.split(":", 1)[1])
        assert amounts(page, "mrr-table", "mrr") == [r["mrr"]["amount"] for r in narrowed["data"]]
        assert narrowed["data"] != answer["data"]

    def test_churn_equals_the_api_and_drills_to_customers_and_events(self, page, live):
        sign_in(page, live)
        open_view(page, live, "churn")
        w = window(page)
        answer = live.get("/v1/metrics/churn", **w)
        rows = answer["data"]
        for key in ("customer_churn_rate", "gross_mrr_churn_rate", "nrr", "grr"):
            assert cells(page, "churn-table", key) == [pct(r[key]) for r in rows], key
        assert cells(page, "churn-table", "customers_lost") == [
            str(r["customers_lost"]) for r in rows
        ]
        thresholds = page.eval_on_selector_all(
            "#card-customer-churn [data-threshold]", "els => els.map(e => +e.dataset.threshold)"
        )
        assert thresholds == [answer["churn_good_below"], answer["churn_high_above"]]
        negative = [r for r in rows if r["negative_churn"]]
        if negative:
            assert page.is_visible("#negative-churn")
        else:
            assert page.locator("#negative-churn").count() == 0

        # A churn bar leads to the customers who churned in that period ...
        index, row = next((i, r) for i, r in enumerate(rows) if r["customers_lost"])
        bar = page.locator("#card-customer-churn g.bar.selectable").nth(index)
        bar.click()
        page.wait_for_selector("main[data-loaded='movements']")
        screenshot(page, "churn-drill")
        behind = live.get(
            "/v1/movements", type="churn", start=row["period_start"], end=row["period_end"],
            limit=1000,
        )["data"]  # fmt: skip
        shown = cells(page, "drill-table", "customer")
        assert shown == [m["customer_id"] for m in behind]
        assert len(set(shown)) >= row["customers_lost"]
        assert cells(page, "drill-table", "events") == [" ".join(m["event_ids"]) for m in behind]
        # ... and each of them to its ledger rows with the Stripe event ids behind them.
        customer_id = behind[0]["customer_id"]
        page.click(f"#drill-table a:text-is('{customer_id}')")
        page.wait_for_selector("main[data-loaded='customer']")
        screenshot(page, "customer")
        detail = live.get(f"/v1/customers/{customer_id}")
        assert cells(page, "ledger-table", "events") == [
            " ".join(m["event_ids"]) for m in detail["movements"]
        ]
        assert amounts(page, "ledger-table", "delta") == [
            m["delta"]["amount"] for m in detail["movements"]
        ]
        assert "churn" in cells(page, "ledger-table", "movement")

    def test_a_bar_is_a_keyboard_button(self, page, live):
        sign_in(page, live)
        page.locator("#card-movements g.bar.selectable").first.focus()
        page.keyboard.press("Enter")
        page.wait_for_selector("main[data-loaded='movements']")
        assert page.locator("#drill-table tbody tr").count() > 0

    def test_a_movement_figure_links_to_the_rows_behind_it(self, page, live):
        sign_in(page, live)
        w = window(page)
        moves = live.get("/v1/metrics/movements", **w)["data"]
        index, row = next((i, r) for i, r in enumerate(moves) if r["churned_mrr"]["amount"])
        link = page.locator("#identity-table td[data-col='churned_mrr'] a.explain").nth(index)
        assert link.inner_text() == usd(row["churned_mrr"]["amount"])
        link.click()
        page.wait_for_selector("main[data-loaded='explain']")
        screenshot(page, "explain")
        behind = live.get(
            "/v1/metrics/explain", metric="churned_mrr", period_start=row["period_start"],
            interval=w["interval"],
        )  # fmt: skip
        assert behind["value"] == behind["reported"] == row["churned_mrr"]["amount"]
        rows = [r for c in behind["data"] for r in c["rows"]]
        assert cells(page, "explain-table", "customer") == [r["customer_id"] for r in rows]
        assert cells(page, "explain-table", "events") == [" ".join(r["event_ids"]) for r in rows]
        shown = amounts(page, "explain-table", "value")
        assert shown == [r["value"] for r in rows]
        assert sum(shown) == row["churned_mrr"]["amount"]
        total = page.get_attribute("#explain-total strong", "data-value")
        assert int(total or 0) == row["churned_mrr"]["amount"]
        assert "✓ the reported figure" in page.inner_text("#explain-total")
        # Each customer leads on to its own page.
        page.click(f"#explain-table a:text-is('{rows[0]['customer_id']}')")
        page.wait_for_selector("main[data-loaded='customer']")

    def test_cohorts_and_reasons_equal_the_api(self, page, live):
        expect = require_browser().expect
        sign_in(page, live)
        w = window(page)
        open_view(page, live, "cohorts")
        cohorts = live.get("/v1/metrics/cohorts", **w)["data"]
        shown = page.eval_on_selector_all(
            "#cohort-table td.heat[data-value]:not([data-value=''])",
            "els => els.map(e => +e.dataset.value)",
        )
        assert shown == [r["logo_retention"] for r in cohorts if r["logo_retention"] is not None]
        page.evaluate("delete document.querySelector('main').dataset.loaded")
        page.select_option("#cohort-measure", "mrr_retention")
        page.wait_for_selector("main[data-loaded='cohorts'] #cohort-table")
        expect(page.locator("#cohort-measure")).to_have_value("mrr_retention")
        shown = page.eval_on_selector_all(
            "#cohort-table td.heat[data-value]:not([data-value=''])",
            "els => els.map(e => +e.dataset.value)",
        )
        assert shown == [r["mrr_retention"] for r in cohorts if r["mrr_retention"] is not None]

        open_view(page, live, "reasons")
        reasons = live.get("/v1/metrics/churn-reasons", **w)["data"]
        for reason in ("voluntary", "involuntary"):
            total = sum(r["churned_mrr"]["amount"] for r in reasons if r["reason"] == reason)
            assert page.inner_text(f"[data-kpi='{reason}'] .value") == usd(total)
        assert sum(amounts(page, "feedback-table", "churned_mrr")) == sum(
            r["churned_mrr"]["amount"] for r in reasons
        )

    def test_failed_payments_equal_the_api_and_link_to_invoice_events(self, page, live):
        sign_in(page, live)
        open_view(page, live, "payments")
        w = window(page)
        recovery = live.get("/v1/metrics/recovery", **w)["data"]
        assert cells(page, "recovery-table", "recovery_rate_by_count") == [
            pct(r["recovery_rate_by_count"]) for r in recovery
        ]
        assert amounts(page, "recovery-table", "failed_amount") == [
            r["failed_amount"]["amount"] for r in recovery
        ]
        open_ = live.get("/v1/failed-payments", status="open", limit=100)["data"]
        assert cells(page, "open-table", "invoice") == [e["invoice_id"] for e in open_]
        assert open_, "the seeded account has an open episode"
        invoice = open_[0]["invoice_id"]
        page.click(f"#open-table a:text-is('{invoice}')")
        page.wait_for_selector("main[data-loaded='invoice']")
        screenshot(page, "invoice")
        detail = live.get(f"/v1/failed-payments/{invoice}")
        assert cells(page, "invoice-events", "event_id") == [
            e["event_id"] for e in detail["events"]
        ]

    def test_customers_are_listed_searched_and_downloaded_as_the_api_answers(self, page, live):
        expect = require_browser().expect
        sign_in(page, live)
        open_view(page, live, "customers")
        api = live.get("/v1/customers", limit=50)
        assert cells(page, "customers-table", "customer") == [c["customer_id"] for c in api["data"]]
        assert amounts(page, "customers-table", "mrr") == [c["mrr"]["amount"] for c in api["data"]]
        assert amounts(page, "customers-table", "mrr") == sorted(
            amounts(page, "customers-table", "mrr"), reverse=True
        )
        needle = api["data"][0]["customer_id"][4:10]
        page.fill("input[name=q]", needle)
        page.press("input[name=q]", "Enter")
        page.wait_for_url(re.compile(f"q={re.escape(needle)}"))
        found = live.get("/v1/customers", q=needle, limit=50)["data"]
        expect(page.locator("#customers-table tbody tr")).to_have_count(len(found))
        assert cells(page, "customers-table", "customer") == [c["customer_id"] for c in found]
        # "Download CSV" hands over exactly what the /v1 URL answers BI tools.
        with page.expect_download() as info:
            page.click("#card-customers a.csv")
        downloaded = Path(info.value.path()).read_text()
        expected = live.api.get(
            "/v1/customers", params={"q": needle, "sort": "mrr_desc", "format": "csv"}
        )
        assert downloaded == expected.text
        assert [r["customer_id"] for r in csv.DictReader(io.StringIO(downloaded))] == [
            c["customer_id"] for c in found
        ]

    def test_money_follows_each_currencys_exponent(self, page, live):
        sign_in(page, live)
        formatted = page.evaluate(
            """async () => {
                const F = await import('/dashboard/static/format.js');
                return [F.money(123456, 'usd'), F.money(1234, 'jpy'), F.money(123456, 'kwd'),
                        F.money(-5, 'usd'), F.money(900719925474099, 'usd')];
            }"""
        )
        assert formatted[0] == "$1,234.56"
        assert formatted[1] == "¥1,234"
        assert formatted[2].replace("\xa0", " ") == "KWD 123.456"
        assert formatted[3] == "-$0.05"
        # Exact past float precision of cents: 9,007,199,254,740.99.
        assert formatted[4] == usd(900719925474099)
        assert Decimal("9007199254740.99") == Decimal(formatted[4][1:].replace(",", ""))


class TestWhenTheApiFails:
    def test_401_goes_back_to_sign_in(self, page, live):
        sign_in(page, live)
        saved = live.app.state.settings
        # Keys revoked where both the request guard and the routes read them: the app's
        # settings (validated anew, so that no parsed key list is carried over).
        live.app.state.settings = Settings.model_validate({**saved.model_dump(), "api_keys": []})
        try:
            page.goto(f"{live.base}/dashboard#/churn")
            page.wait_for_selector("#sign-in:not([hidden])")
            assert "401" in page.inner_text("#sign-in-error")
            assert page.evaluate("sessionStorage.length") == 0
        finally:
            live.app.state.settings = saved
        screenshot(page, "signed-out-401")

    def test_503_shows_a_message_and_recovers(self, page, live):
        sign_in(page, live)

        def unavailable() -> Iterator[Any]:
            raise OperationalError("SELECT 1", {}, Exception("database is restarting"))
            yield  # a generator, as the real session dependency

        # Lists read through the streaming session (their CSV outlives the route): both.
        live.app.dependency_overrides[get_session] = unavailable
        live.app.dependency_overrides[get_stream_session] = unavailable
        page.evaluate("delete document.querySelector('main').dataset.loaded")
        page.goto(f"{live.base}/dashboard#/customers")
        page.wait_for_selector("#banner:not([hidden])")
        assert "503" in page.inner_text("#banner")
        assert page.is_visible("#nav") and page.is_hidden("#sign-in")  # still signed in
        screenshot(page, "unavailable-503")
        live.app.dependency_overrides.clear()
        page.click("#banner button")
        page.wait_for_selector("main[data-loaded='customers']")
        assert page.is_hidden("#banner")
        assert page.locator("#customers-table tbody tr").count() > 0

    def test_503_on_the_first_load_is_retried(self, page, live):
        page.goto(f"{live.base}/dashboard")
        page.evaluate(f"sessionStorage.setItem('churn-ledger.api-key', '{API_KEY}')")

        def unavailable() -> Iterator[Any]:
            raise OperationalError("SELECT 1", {}, Exception("database is restarting"))
            yield

        # Lists read through the streaming session (their CSV outlives the route): both.
        live.app.dependency_overrides[get_session] = unavailable
        live.app.dependency_overrides[get_stream_session] = unavailable
        page.reload()
        page.wait_for_selector("#banner:not([hidden])")
        assert "503" in page.inner_text("#banner")
        live.app.dependency_overrides.clear()
        page.click("#banner button")
        page.wait_for_selector("main[data-loaded='overview']")
        assert page.locator("#mrr-table tbody tr").count() > 0


def data_of(page: Any, selector: str, name: str) -> list[str]:
    return page.eval_on_selector_all(selector, f"els => els.map(e => e.dataset.{name})")


class TestPeriods:
    def test_closed_months_and_restatements_at_desktop_and_phone_width(
        self, closed_page, closed_live
    ):
        sign_in(closed_page, closed_live)
        check_views(closed_page, closed_live, ["periods"], suffix="-closed")
        # Both cards say how fresh they are and download from their /v1 list.
        for card_id, path in (("card-periods", "/v1/periods"),
                              ("card-restatements", "/v1/restatements")):  # fmt: skip
            assert closed_page.locator(f"#{card_id} .as-of").count() == 1
            assert closed_page.get_attribute(f"#{card_id} a.csv", "href") == f"{path}?format=csv"

    def test_nothing_closed_says_so(self, page, live):
        sign_in(page, live)
        page.click("#nav a[data-view='periods']")
        page.wait_for_selector("main[data-loaded='periods']")
        assert page.is_visible("#no-periods") and page.is_visible("#no-restatements")
        assert live.get("/v1/periods")["data"] == live.get("/v1/restatements")["data"] == []

    def test_the_view_equals_the_api(self, closed_page, closed_live):
        page, live = closed_page, closed_live
        sign_in(page, live)
        page.click("#nav a[data-view='periods']")
        page.wait_for_selector("main[data-loaded='periods']")
        closed = live.get("/v1/periods")
        restated = live.get("/v1/restatements")
        months = closed["data"]
        assert [p["period"] for p in months] == CLOSED_MONTHS
        assert cells(page, "periods-table", "period") == CLOSED_MONTHS
        for m in PERIOD_FIGURES:
            selector = f"#periods-table td[data-col='{m}'] .figure"
            assert data_of(page, selector, "now") == [str(p["figures"][m]) for p in months], m
            assert data_of(page, selector, "atClose") == [
                str(p["figures_at_close"][m]) for p in months
            ], m
        # Shown: the figure now, and beneath it the one at the close where they differ.
        expected: list[int] = []
        for p in months:
            now, then = p["figures"]["mrr_end"], p["figures_at_close"]["mrr_end"]
            expected += [now] if now == then else [now, then]
        assert amounts(page, "periods-table", "mrr_end") == expected
        assert cells(page, "periods-table", "restatements") == [
            str(p["restatements"]) for p in months
        ]
        # Hand-computed: March alone moved, by the two late subscriptions (+40.00, +25.00).
        march = months[2]
        assert [p["restatements"] for p in months] == [0, 0, 2]
        assert march["figures"]["new_mrr"] - march["figures_at_close"]["new_mrr"] == 6500
        assert march["figures"]["mrr_end"] - march["figures_at_close"]["mrr_end"] == 6500
        assert march["figures"]["customers_end"] - march["figures_at_close"]["customers_end"] == 2
        assert page.locator("#periods-table tbody tr:nth-child(3) del.at-close").count() == 3
        assert page.locator("#periods-table tbody tr:nth-child(-n+2) del").count() == 0
        # "Now" is what the metric tables answer now.
        moves = live.get("/v1/metrics/movements", start="2024-01-01", end="2024-04-01")["data"]
        assert [r["mrr_end"]["amount"] for r in moves] == [p["figures"]["mrr_end"] for p in months]
        assert [r["new_mrr"]["amount"] for r in moves] == [p["figures"]["new_mrr"] for p in months]

        # Restatements, newest first: old → new per figure, the late events, when found.
        newest_first = restated["data"][::-1]
        assert cells(page, "restatements-table", "period") == ["2024-03", "2024-03"]
        assert cells(page, "restatements-table", "events") == [
            " ".join(r["event_ids"]) for r in newest_first
        ]
        assert [r["event_ids"] for r in newest_first] == [
            ["evt_late_march_2"],
            ["evt_late_march_1"],
        ]
        assert cells(page, "restatements-table", "detected_at") == [
            r["detected_at"].replace("T", " ").removesuffix("Z").split(".")[0] + " UTC"
            for r in newest_first
        ]
        shown = page.eval_on_selector_all(
            "#restatements-table tbody tr",
            """rows => rows.map(r => [...r.querySelectorAll('li')]
                 .map(li => [li.dataset.metric, +li.dataset.old, +li.dataset.new]))""",
        )
        # In the figures' order (MRR, customers, movements, turnover and customer-days,
        # then the cohort cells by name), the API's by name.
        assert [sorted(row) for row in shown] == [
            sorted([c["metric"], c["old"], c["new"]] for c in r["changes"]) for r in newest_first
        ]
        values = ("active_customers", "cohort_customers", "cohort_mrr", "initial_mrr")
        cohort = [f"cohort:2024-03:{v}" for v in values]
        assert [[m for m, _, _ in row] for row in shown] == [
            ["mrr_end", "customers_end", "new_mrr", "new_customers", "customer_days",
             "customers_gained", *cohort]
        ] * 2  # fmt: skip
        names = page.eval_on_selector_all(
            "#restatements-table tbody tr:first-child li .metric", "s => s.map(e => e.textContent)"
        )
        assert names[-4:] == ["Cohort 2024-03: active customers", "Cohort 2024-03: customers",
                              "Cohort 2024-03: MRR", "Cohort 2024-03: initial MRR"]  # fmt: skip
        changes = [{c["metric"]: c["new"] - c["old"] for c in r["changes"]} for r in newest_first]
        assert [(c["new_mrr"], c["mrr_end"], c["new_customers"]) for c in changes] == [
            (2500, 2500, 1), (4000, 4000, 1),
        ]  # fmt: skip
        assert page.inner_text("[data-kpi='closed'] .value") == "3"
        assert page.inner_text("[data-kpi='restated'] .value") == "1"
        assert page.inner_text("[data-kpi='restatements'] .value") == "2"
        assert page.inner_text("#card-periods .as-of") == (
            "as of " + closed["as_of"].replace("T", " ").removesuffix("Z").split(".")[0] + " UTC"
        )

    def test_download_csv_is_what_the_api_answers(self, closed_page, closed_live):
        sign_in(closed_page, closed_live)
        open_view(closed_page, closed_live, "periods")
        for card_id, path in (("card-periods", "/v1/periods"),
                              ("card-restatements", "/v1/restatements")):  # fmt: skip
            with closed_page.expect_download() as info:
                closed_page.click(f"#{card_id} a.csv")
            downloaded = Path(info.value.path()).read_text()
            assert info.value.suggested_filename == path.split("/")[-1] + ".csv"
            assert downloaded == closed_live.api.get(path, params={"format": "csv"}).text
            assert len(downloaded.splitlines()) > 1
