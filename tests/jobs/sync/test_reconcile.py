"""Reconcile: drift between the ledger and Stripe's current objects, found and repaired."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from typer import Typer
from typer.testing import CliRunner

from jobs.sync.backfill import BackfillOptions, run_backfill
from jobs.sync.cli import backfill_command, reconcile_command
from jobs.sync.reconcile import ReconcileReport, reconcile
from jobs.sync.stripe_client import StripeApi
from service.ledger.models import SubscriptionState
from service.settings import LedgerOptions, get_settings
from service.sync.models import ReconcileRun
from service.webhooks.models import EventSource, StripeEvent
from tests.conftest import Database
from tests.jobs.sync.account import EXPECTED_LEDGER, NOW, inject_drift
from tests.jobs.sync.fake_stripe import FakeStripe
from tests.jobs.sync.helpers import STRIPE_KEY, Sleeps, ledger_rows, make_api, mocked_account

OPTIONS = LedgerOptions()


def backfilled(session: Session, api: StripeApi, account: str = "") -> None:
    run_backfill(session, api, BackfillOptions(account=account, now=NOW), OPTIONS)


def drift(report: ReconcileReport) -> list[tuple]:
    return [
        (d.subscription_id, d.ledger_mrr, d.stripe_mrr, d.ledger_status, d.stripe_status)
        for d in report.differences
    ]


def mrr(session: Session, sub_id: str, account: str = "") -> tuple[str, int] | None:
    state = session.get(SubscriptionState, (account, sub_id), populate_existing=True)
    return None if state is None else (state.status, state.mrr)


class TestReconcile:
    def test_no_drift_right_after_backfill(self, db_session: Session, api: StripeApi):
        backfilled(db_session, api)
        report = reconcile(db_session, api, OPTIONS, now=NOW)
        assert report.differences == []
        assert report.checked == 4  # sub_a2, sub_b, sub_c, sub_d; the canceled ones count 0

    def test_finds_injected_drift(self, db_session: Session, api: StripeApi, fake: FakeStripe):
        backfilled(db_session, api)
        inject_drift(fake)
        events = db_session.scalar(select(func.count()).select_from(StripeEvent))
        report = reconcile(db_session, api, OPTIONS, now=NOW)
        assert drift(report) == [
            # 5 × 4900 × 0.8 = 19600 against the ledger's 3 × 4900 × 0.8 = 11760
            ("sub_b", 11760, 19600, "active", "active"),
            # canceled in Stripe (not listed by default: looked up by id)
            ("sub_c", 10000, 0, "active", "canceled"),
            # never seen by the ledger
            ("sub_g", 0, 4900, None, "active"),
        ]
        assert report.as_json()["drift_mrr"] == {"usd": 7840 + 10000 + 4900}
        assert len(fake.calls("/v1/subscriptions/sub_c")) == 1
        # Without --repair nothing is written to the store.
        assert db_session.scalar(select(func.count()).select_from(StripeEvent)) == events

    def test_repair_converges(self, db_session: Session, api: StripeApi, fake: FakeStripe):
        backfilled(db_session, api)
        inject_drift(fake)
        report = reconcile(db_session, api, OPTIONS, now=NOW, repair=True)
        assert (report.repaired, report.unresolved) == (3, [])
        assert mrr(db_session, "sub_b") == ("active", 19600)
        assert mrr(db_session, "sub_c") == ("canceled", 0)
        assert mrr(db_session, "sub_g") == ("active", 4900)
        repairs = db_session.scalars(
            select(StripeEvent).where(StripeEvent.source == EventSource.reconcile)
        ).all()
        assert {(e.type, e.created, e.event_id[:7]) for e in repairs} == {
            ("customer.subscription.updated", NOW, "evt_rc_")
        }
        # The movements land on the repair's day; history before it is untouched.
        assert ledger_rows(db_session) == sorted(
            [
                *EXPECTED_LEDGER,
                ("cus_b", 400, "expansion", 11760, 19600),
                ("cus_c", 400, "churn", 10000, 0),
                ("cus_g", 400, "new", 0, 4900),
            ]
        )
        again = reconcile(db_session, api, OPTIONS, now=NOW, repair=True)
        assert again.differences == []
        assert db_session.scalar(
            select(func.count()).select_from(StripeEvent).where(StripeEvent.source == "reconcile")
        ) == len(repairs)

    def test_runs_are_recorded(self, db_session: Session, api: StripeApi, fake: FakeStripe):
        backfilled(db_session, api)
        inject_drift(fake)
        reconcile(db_session, api, OPTIONS, now=NOW, trigger="cli")
        run = db_session.scalars(select(ReconcileRun)).one()
        assert (run.account, run.checked, run.drifted, run.repaired) == ("", 5, 3, 0)
        assert run.drift_mrr == {"usd": 22740}

    def test_connect_accounts_are_reconciled_apart(self, db_session: Session, sleeps: Sleeps):
        with mocked_account() as platform:
            backfilled(db_session, make_api(sleeps))
        with mocked_account("acct_1Connected") as connected:
            api = make_api(sleeps, account="acct_1Connected")
            backfilled(db_session, api, "acct_1Connected")
            inject_drift(connected)
            report = reconcile(db_session, api, OPTIONS, account="acct_1Connected", now=NOW,
                               repair=True)  # fmt: skip
        assert platform is not connected
        assert [d.subscription_id for d in report.differences] == ["sub_b", "sub_c", "sub_g"]
        assert mrr(db_session, "sub_b", "acct_1Connected") == ("active", 19600)
        assert mrr(db_session, "sub_b", "") == ("active", 11760)  # the platform's is untouched
        assert mrr(db_session, "sub_g", "") is None


class TestCommands:
    """The typer commands on a database of their own (they commit), as service/cli.py runs them."""

    @pytest.fixture
    def cli(self, fresh_database: Database, monkeypatch: pytest.MonkeyPatch):
        monkeypatch.setenv("DATABASE_URL", fresh_database.url)
        monkeypatch.setenv("STRIPE_API_KEY", STRIPE_KEY)
        monkeypatch.setenv("STRIPE_MAX_NETWORK_RETRIES", "0")
        get_settings.cache_clear()
        app = Typer()
        app.command("backfill")(backfill_command)
        app.command("reconcile")(reconcile_command)
        yield app, fresh_database
        get_settings.cache_clear()

    def test_backfill_then_reconcile(self, cli: tuple[Typer, Database]):
        app, database = cli
        runner = CliRunner()
        with mocked_account() as fake:
            result = runner.invoke(app, ["backfill"])
            assert result.exit_code == 0, result.output
            assert "subscriptions: 6 fetched" in result.output
            with Session(database.engine) as session:
                assert ledger_rows(session) == EXPECTED_LEDGER

            result = runner.invoke(app, ["reconcile", "--json"])
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout)["drifted"] == 0

            inject_drift(fake)
            result = runner.invoke(app, ["reconcile"])
            assert result.exit_code == 1  # drift left: cron can alert on it
            assert "3 of 5 subscriptions differ" in result.stdout
            assert "sub_g" in result.stdout

            result = runner.invoke(app, ["reconcile", "--repair", "--json"])
            assert result.exit_code == 0, result.output
            assert json.loads(result.stdout)["repaired"] == 3
            result = runner.invoke(app, ["reconcile", "--json"])
            assert json.loads(result.stdout)["drifted"] == 0

    def test_refuses_without_api_key(self, cli: tuple[Typer, Database], monkeypatch):
        app, _ = cli
        monkeypatch.delenv("STRIPE_API_KEY")
        get_settings.cache_clear()
        result = CliRunner().invoke(app, ["backfill"])
        assert result.exit_code == 2
        assert "STRIPE_API_KEY" in result.output

    def test_rejects_a_malformed_account(self, cli: tuple[Typer, Database]):
        app, _ = cli
        result = CliRunner().invoke(app, ["reconcile", "--account", "cus_123"])
        assert result.exit_code == 2
