"""`fx-sync`: the ECB's feed (respx at the HTTP layer, a real-shaped XML file), cross rates
to the reporting currency, idempotent storage, weekends, errors, the schedule; both
databases. Every expected rate is the feed's two rates divided, to 10 digits."""

from __future__ import annotations

import time
from datetime import date
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
import respx
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from jobs.metrics.refresh import refresh
from service.db import make_sessionmaker
from service.ledger import ecb
from service.ledger.fx import FxRateError
from service.ledger.fxsync import FxSyncer, sync_once
from service.ledger.models import ChangedDay, FxRate, MrrMovement
from service.ledger.service import ecb_feed_needed, store_ecb_rates
from service.settings import LedgerOptions
from tests.conftest import API_KEY, Database, make_settings
from tests.metrics.scenario import Step, add_series

FIXTURE = Path(__file__).parents[1] / "fixtures" / "ecb" / "eurofxref-hist-90d.xml"
FEED = FIXTURE.read_bytes()
URL_90D = f"{ecb.ECB_BASE}/{ecb.HIST_90D}"
USD = LedgerOptions(reporting_currency="usd")
TODAY = date(2025, 1, 7)
AUTH = {"Authorization": f"Bearer {API_KEY}"}

# A later feed: one more working day (Tuesday 7 January) on top of the fixture's three.
NEXT_DAY = FEED.replace(
    b"<Cube>\n\t\t<Cube time='2025-01-06'>",
    b"<Cube>\n\t\t<Cube time='2025-01-07'>\n\t\t\t<Cube currency='USD' rate='1.0393'/>\n"
    b"\t\t\t<Cube currency='GBP' rate='0.83000'/>\n\t\t</Cube>\n"
    b"\t\t<Cube time='2025-01-06'>",
)


def _rates(session: Session) -> dict[tuple[str, date], str]:
    rows = session.scalars(select(FxRate).where(FxRate.quote == "usd"))
    return {(r.currency, r.day): r.rate for r in rows}


def _marks(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ChangedDay)) or 0


def _store(session: Session, feed: bytes = FEED, **kw: object):
    return store_ecb_rates(session, USD, ecb.parse(feed), feed=ecb.HIST_90D, today=TODAY, **kw)


class TestParse:
    def test_the_feed(self):
        days = ecb.parse(FEED)
        assert sorted(days) == [date(2025, 1, 2), date(2025, 1, 3), date(2025, 1, 6)]
        assert days[date(2025, 1, 3)] == {
            "usd": Decimal("1.0299"), "jpy": Decimal("162.57"), "gbp": Decimal("0.82960"),
            "chf": Decimal("0.9388"), "sek": Decimal("11.5065"),
        }  # fmt: skip

    @pytest.mark.parametrize(
        ("body", "mentions"),
        [
            (b"<html><body>Service Unavailable</body>", "not XML"),
            (b"", "not XML"),
            (FEED[: len(FEED) // 2], "not XML"),
            (b"<?xml version='1.0'?><rates/>", "no Cube"),
            (FEED.replace(b"time='2025-01-03'", b"time='yesterday'"), "not a date"),
            (FEED.replace(b"rate='162.57'", b"rate='N/A'"), "not a number"),
            (FEED.replace(b"rate='162.57'", b"rate='-162.57'"), "not positive"),
            (FEED.replace(b"currency='JPY'", b"currency='YEN!'"), "ISO 4217"),
            (FEED.split(b"<Cube>")[0] + b"<Cube></Cube></gesmes:Envelope>", "no rates"),
        ],
    )
    def test_malformed_is_a_clear_error(self, body: bytes, mentions: str):
        with pytest.raises(ecb.EcbError, match=mentions):
            ecb.parse(body)


class TestCrossRates:
    def test_to_usd(self):
        quotes = {(q.currency, q.day): q.rate for q in ecb.cross_rates(ecb.parse(FEED), "usd")}
        fri = date(2025, 1, 3)
        assert quotes[("gbp", fri)] == Decimal("1.241441659")  # 1.0299 / 0.82960
        assert quotes[("jpy", fri)] == Decimal("0.006335117180")  # 1.0299 / 162.57
        assert quotes[("eur", fri)] == Decimal("1.0299")  # 1 EUR = 1.0299 USD
        assert quotes[("gbp", date(2025, 1, 6))] == Decimal("1.253125")  # 1.0426 / 0.832
        assert ("usd", fri) not in quotes
        assert len(quotes) == 3 * 5  # jpy, gbp, chf, sek, eur on each of 3 days

    def test_to_eur(self):
        quotes = {(q.currency, q.day): q.rate for q in ecb.cross_rates(ecb.parse(FEED), "eur")}
        assert quotes[("gbp", date(2025, 1, 3))] == Decimal("1.205400193")  # 1 / 0.82960
        assert ("eur", date(2025, 1, 3)) not in quotes

    def test_a_day_without_the_reporting_currency_gives_no_quotes(self):
        feed = ecb.parse(FEED)
        del feed[date(2025, 1, 3)]["usd"]
        days = {q.day for q in ecb.cross_rates(feed, "usd")}
        assert days == {date(2025, 1, 2), date(2025, 1, 6)}


class TestStore:
    def test_weekend_takes_fridays_rate_and_amounts_are_recomputed(self, db_session: Session):
        # £100.00 from Saturday 4 January (no publication: Friday's 1.241441659 applies),
        # £200.00 from Monday 6 January (1.253125).
        add_series(db_session, "c_gbp", [Step(date(2025, 1, 4), 10000, rate=None),
                   Step(date(2025, 1, 6), 20000, rate=None)], currency="gbp")  # fmt: skip
        db_session.flush()
        result = _store(db_session)
        # From Friday 3 January (the last publication on or before the first ledger row):
        # 2 days × 5 currencies.
        assert (result.stored, result.recomputed, result.latest) == (10, 2, date(2025, 1, 6))
        assert date(2025, 1, 2) not in {day for _, day in _rates(db_session)}
        rows = db_session.scalars(select(MrrMovement).order_by(MrrMovement.day)).all()
        # 10000 × 1.241441659 = 12414.4 → 12414; 10000 × 1.253125 = 12531.25 → 12531,
        # 20000 × 1.253125 = 25062.5 → 25063 (half up); delta 25063 − 12531 = 12532.
        assert [(r.fx_rate, r.to_mrr_reporting, r.delta_reporting) for r in rows] == [
            ("1.241441659", 12414, 12414),
            ("1.253125", 25063, 12532),
        ]
        assert _marks(db_session) == 2

    def test_again_stores_and_marks_nothing(self, db_session: Session):
        add_series(db_session, "c_gbp", [Step(date(2025, 1, 4), 10000, rate=None)],
                   currency="gbp")  # fmt: skip
        _store(db_session)
        before, marks = _rates(db_session), _marks(db_session)
        again = _store(db_session)
        assert (again.stored, again.recomputed) == (0, 0)
        assert (_rates(db_session), _marks(db_session)) == (before, marks)

    def test_a_new_day_adds_only_its_rates(self, db_session: Session):
        add_series(db_session, "c_gbp", [Step(date(2025, 1, 4), 10000, rate=None)],
                   currency="gbp")  # fmt: skip
        _store(db_session)
        before = _rates(db_session)
        result = _store(db_session, NEXT_DAY)
        # 7 January publishes USD and GBP: one quote, gbp = 1.0393 / 0.83 = 1.252168675;
        # plus eur = 1.0393.
        assert result.stored == 2
        after = _rates(db_session)
        assert {k: v for k, v in after.items() if k not in before} == {
            ("gbp", date(2025, 1, 7)): "1.252168675",
            ("eur", date(2025, 1, 7)): "1.0393",
        }

    def test_a_changed_rate_is_overwritten(self, db_session: Session):
        _store(db_session, since=date(2025, 1, 2))
        result = _store(db_session, FEED.replace(b"rate='0.82960'", b"rate='0.83000'"),
                         since=date(2025, 1, 2))  # fmt: skip
        assert result.stored == 1  # gbp on 3 January, and only it: 1.0299 / 0.83
        assert _rates(db_session)[("gbp", date(2025, 1, 3))] == "1.240843373"

    def test_empty_ledger_takes_from_the_last_publication_before_today(self, db_session: Session):
        _store(db_session)
        assert {day for _, day in _rates(db_session)} == {date(2025, 1, 6)}

    def test_reporting_currency_the_ecb_does_not_publish(self, db_session: Session):
        with pytest.raises(ecb.EcbError, match="publishes no ARS rate"):
            store_ecb_rates(db_session, LedgerOptions(reporting_currency="ars"),
                            ecb.parse(FEED), feed=ecb.HIST_90D, today=TODAY)  # fmt: skip
        assert _rates(db_session) == {}

    def test_a_rate_past_the_bounds_stores_nothing(self, db_session: Session):
        feed = FEED.replace(b"rate='162.57'", b"rate='1e-15'")
        with pytest.raises(FxRateError, match="outside"):
            _store(db_session, feed, since=date(2025, 1, 2))
        assert _rates(db_session) == {}


class TestFeedChoice:
    def test_recent_needs_the_90_day_feed(self, db_session: Session):
        assert ecb_feed_needed(db_session, USD, today=TODAY) == ecb.HIST_90D

    def test_an_old_ledger_needs_the_history(self, db_session: Session):
        add_series(db_session, "c_gbp", [Step(date(2024, 6, 1), 10000, rate=None)],
                   currency="gbp")  # fmt: skip
        db_session.flush()
        assert ecb_feed_needed(db_session, USD, today=TODAY) == ecb.HIST
        # Once held from before the ledger's start, only the recent days are missing.
        _store(db_session, FEED.replace(b"2025-01-02", b"2024-05-31"))
        assert ecb_feed_needed(db_session, USD, today=TODAY) == ecb.HIST_90D

    def test_an_old_since(self, db_session: Session):
        assert ecb_feed_needed(db_session, USD, today=TODAY, since=date(2020, 1, 1)) == ecb.HIST


@pytest.fixture
def factory(fresh_database: Database) -> sessionmaker[Session]:
    return make_sessionmaker(fresh_database.engine)


class TestSyncOverHttp:
    def test_fetches_and_stores(self, factory: sessionmaker[Session]):
        with respx.mock(assert_all_called=True) as router, httpx.Client() as client:
            route = router.get(URL_90D).respond(200, content=FEED)
            result = sync_once(factory, USD, client, today=TODAY, since=date(2025, 1, 2))
        assert route.call_count == 1
        assert result.stored == 15
        with factory() as session:
            assert len(_rates(session)) == 15

    @pytest.mark.parametrize(
        "response",
        [httpx.Response(503, text="Service Unavailable"), httpx.Response(200, text="<html>")],
    )
    def test_errors_store_nothing(self, factory: sessionmaker[Session], response):
        with respx.mock() as router, httpx.Client() as client:
            router.get(URL_90D).mock(return_value=response)
            with pytest.raises(ecb.EcbError, match=r"HTTP 503|not XML"):
                sync_once(factory, USD, client, today=TODAY)
        with factory() as session:
            assert _rates(session) == {}

    def test_unreachable(self, factory: sessionmaker[Session]):
        with respx.mock() as router, httpx.Client() as client:
            router.get(URL_90D).mock(side_effect=httpx.ConnectError("no route to host"))
            with pytest.raises(ecb.EcbError, match="ConnectError"):
                sync_once(factory, USD, client, today=TODAY)


class TestMetricsFollow:
    def test_mrr_reflects_the_synced_rates(self, client: TestClient, db_session: Session):
        add_series(db_session, "c_gbp", [Step(date(2025, 1, 4), 10000, rate=None),
                   Step(date(2025, 1, 6), 20000, rate=None)], currency="gbp")  # fmt: skip
        refresh(db_session, today=TODAY)
        q = {"start": "2025-01-01", "end": "2025-02-01", "interval": "month"}
        before = client.get("/v1/metrics/mrr", params=q, headers=AUTH).json()
        assert before["unconverted_currencies"] == ["gbp"]
        assert before["data"][0]["mrr"]["amount"] == 0
        _store(db_session)
        refresh(db_session, today=TODAY)  # what the running service's refresher does
        after = client.get("/v1/metrics/mrr", params=q, headers=AUTH).json()
        assert after["unconverted_currencies"] == []
        # The sum of the rows' reporting deltas: 12414 + 12532.
        assert (after["data"][0]["mrr"]["amount"], after["data"][0]["customers"]) == (24946, 1)


class TestSchedule:
    def test_off_by_default(self, factory: sessionmaker[Session]):
        assert FxSyncer.from_settings(make_settings("sqlite://"), factory) is None

    def test_setting(self, factory: sessionmaker[Session]):
        syncer = FxSyncer.from_settings(
            make_settings("sqlite://", fx_sync_interval_s=3600), factory
        )
        assert syncer is not None
        syncer.stop()

    def test_too_tight_an_interval_is_refused(self):
        with pytest.raises(ValueError, match="fx_sync_interval_s"):
            make_settings("sqlite://", fx_sync_interval_s=1)

    def test_syncs_at_start_and_then_each_interval(self, factory: sessionmaker[Session]):
        with respx.mock() as router:
            route = router.get(URL_90D).respond(200, content=FEED)
            syncer = FxSyncer(factory, USD, 3600, client=httpx.Client())
            syncer.start()
            deadline = time.monotonic() + 10
            while syncer.last is None and time.monotonic() < deadline:
                time.sleep(0.05)
            syncer.stop()
        assert route.call_count == 1  # at start; the next one an hour later
        assert syncer.last is not None and syncer.last.feed == ecb.HIST_90D
        with factory() as session:
            assert _rates(session)  # the last publication before today, at least

    def test_a_failing_feed_keeps_the_thread_alive(self, factory: sessionmaker[Session]):
        with respx.mock() as router:
            route = router.get(URL_90D).respond(503)
            syncer = FxSyncer(factory, USD, 3600, client=httpx.Client())
            syncer.start()
            deadline = time.monotonic() + 10
            while not route.called and time.monotonic() < deadline:
                time.sleep(0.05)
            assert route.called
            assert syncer._thread is not None and syncer._thread.is_alive()
            syncer.stop()
        assert syncer.last is None

    def test_serve_runs_it(self, fresh_database: Database):
        from service.app import create_app

        settings = make_settings(fresh_database.url, fx_sync_interval_s=3600,
                                 projector_enabled=False)  # fmt: skip
        with respx.mock() as router:
            route = router.get(URL_90D).respond(200, content=FEED)
            app = create_app(settings, fresh_database.engine)
            with TestClient(app):
                syncer = app.state.fx_syncer
                deadline = time.monotonic() + 10
                while syncer.last is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert syncer.last is not None
            assert route.call_count == 1
