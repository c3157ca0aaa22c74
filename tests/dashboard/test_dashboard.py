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
from collections.abc import Iterator
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
from tests.conftest import API_KEY
from tests.dashboard.browser import (
    chromium,
    migrate,
    require_browser,
    screenshot,
    seed,
    seeded_settings,
)
from tests.live import live_server

AUTH = {"Authorization": f"Bearer {API_KEY}"}
VIEWS = ["overview", "churn", "cohorts", "reasons", "payments", "customers"]


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


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    require_browser()  # before the seeding: a missing browser skips (or fails) at once
    workdir = Path(tempfile.mkdtemp(prefix="churn-ledger-dashboard-"))
    settings = seeded_settings(workdir)
    migrate(settings)
    app = create_app(settings)
    with live_server(app) as base:
        seed(base, settings, customers=40, months=12, seed_=5)
        server = Live(app, base, workdir)
        yield server
        server.api.close()


@pytest.fixture(scope="module")
def context(live: Live) -> Iterator[Any]:
    with chromium(live.workdir / "profile") as ctx:
        yield ctx


@pytest.fixture
def page(context: Any, live: Live) -> Iterator[Any]:
    tab = context.new_page()  # a new tab: its own sessionStorage, signed out
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    live.app.dependency_overrides.clear()
    tab.close()
    assert errors == [], errors


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
    page.goto(f"{live.base}/dashboard#/{route}")
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


class TestViews:
    def test_every_view_loads_at_desktop_and_phone_width(self, page, live):
        sign_in(page, live)
        charts = 0
        for view in VIEWS:
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
            screenshot(page, f"{view}-1280")
        assert charts >= 10  # the checks above were not about nothing
        page.set_viewport_size({"width": 390, "height": 844})
        for view in VIEWS:
            open_view(page, live, view)
            # Nothing wider than the phone: wide tables scroll inside their own box.
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, (view, width)
            screenshot(page, f"{view}-phone")

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
