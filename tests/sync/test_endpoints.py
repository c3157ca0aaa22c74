"""POST /v1/admin/reconcile and the drift gauge, on a database of their own (real commits:
the gauge reads through its own sessions, as in production)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from jobs.sync.backfill import BackfillOptions, run_backfill
from service.app import create_app
from service.settings import LedgerOptions
from service.sync.reconciler import get_reconciler
from tests.conftest import API_KEY, Database
from tests.jobs.sync.account import NOW, inject_drift
from tests.jobs.sync.fake_stripe import FakeStripe
from tests.jobs.sync.helpers import Sleeps, make_api, mocked_account, stripe_settings

ADMIN_KEY = "admin_key_0123456789abcdef"


def admin(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def fake(fresh_database: Database) -> Iterator[FakeStripe]:
    with mocked_account() as account:
        with Session(fresh_database.engine, expire_on_commit=False) as session:
            run_backfill(session, make_api(Sleeps()), BackfillOptions(now=NOW), LedgerOptions())
        yield account


def client_for(database: Database, **settings: object) -> TestClient:
    values: dict[str, object] = {"admin_api_keys": ADMIN_KEY, **settings}
    app = create_app(stripe_settings(database.url, **values), database.engine)
    return TestClient(app, raise_server_exceptions=False)


class TestAuth:
    @pytest.mark.parametrize(
        "headers",
        [{}, admin("wrong"), {"Authorization": ADMIN_KEY}],
        ids=["none", "wrong", "no-scheme"],
    )
    def test_refused_without_the_admin_key(self, fresh_database: Database, headers):
        response = client_for(fresh_database).post("/v1/admin/reconcile", json={}, headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "unauthorized"
        assert response.headers["www-authenticate"] == "Bearer"

    def test_read_key_is_forbidden(self, fresh_database: Database):
        response = client_for(fresh_database).post(
            "/v1/admin/reconcile", json={}, headers=admin(API_KEY)
        )
        assert response.status_code == 403
        assert response.json()["error"]["type"] == "forbidden"

    def test_no_admin_keys_configured_refuses_every_key(self, fresh_database: Database):
        client = client_for(fresh_database, admin_api_keys="")
        response = client.post("/v1/admin/reconcile", json={}, headers=admin(""))
        assert response.status_code == 401

    def test_stripe_key_missing_is_503(self, fresh_database: Database):
        client = client_for(fresh_database, stripe_api_key=None)
        response = client.post("/v1/admin/reconcile", json={}, headers=admin())
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "stripe_not_configured"

    def test_malformed_account_is_422(self, fresh_database: Database):
        response = client_for(fresh_database).post(
            "/v1/admin/reconcile", json={"account": "cus_1"}, headers=admin()
        )
        assert response.status_code == 422


class TestReconcileEndpoint:
    def test_runs_the_job_the_app_was_given(self, fresh_database: Database):
        calls = []
        report = {
            "account": "acct_1", "as_of": 1, "checked": 0, "drifted": 0, "repaired": 0,
            "unresolved": [], "drift_mrr": {}, "differences": [],
        }  # fmt: skip

        def job(session, settings, *, account, repair):
            calls.append((account, repair))
            return report

        client = client_for(fresh_database)
        client.app.dependency_overrides[get_reconciler] = lambda: job
        body = {"account": "acct_1", "repair": True}
        response = client.post("/v1/admin/reconcile", json=body, headers=admin())
        assert (response.status_code, response.json()) == (200, report)
        assert calls == [("acct_1", True)]

    def test_reports_then_repairs_drift(self, fresh_database: Database, fake: FakeStripe):
        client = client_for(fresh_database)
        clean = client.post("/v1/admin/reconcile", json={}, headers=admin())
        assert clean.status_code == 200, clean.text
        assert (clean.json()["checked"], clean.json()["drifted"]) == (4, 0)

        inject_drift(fake)
        found = client.post("/v1/admin/reconcile", json={}, headers=admin()).json()
        assert [d["subscription_id"] for d in found["differences"]] == ["sub_b", "sub_c", "sub_g"]
        assert found["differences"][0]["delta"] == 19600 - 11760
        assert (found["repaired"], found["drift_mrr"]) == (0, {"usd": 22740})
        gauge = client.get("/metrics").text
        assert 'churn_ledger_reconcile_drifted_subscriptions{account=""} 3.0' in gauge
        assert 'churn_ledger_reconcile_drift_mrr{account="",currency="usd"} 22740.0' in gauge

        repaired = client.post("/v1/admin/reconcile", json={"repair": True}, headers=admin())
        assert (repaired.json()["repaired"], repaired.json()["unresolved"]) == (3, [])
        after = client.post("/v1/admin/reconcile", json={}, headers=admin()).json()
        assert after["drifted"] == 0
        assert 'drifted_subscriptions{account=""} 0.0' in client.get("/metrics").text

    def test_stripe_refusal_is_502(self, fresh_database: Database, fake: FakeStripe):
        refusal = {"error": {"type": "invalid_request_error", "message": "Invalid API Key"}}
        fake.fail("/v1/subscriptions", httpx.Response(401, json=refusal))
        response = client_for(fresh_database).post("/v1/admin/reconcile", json={}, headers=admin())
        assert response.status_code == 502
        assert response.json()["error"] == {
            "type": "stripe_error",
            "message": "AuthenticationError: Invalid API Key",
        }

    def test_gauge_is_empty_before_any_run(self, fresh_database: Database):
        metrics = client_for(fresh_database).get("/metrics").text
        assert "# TYPE churn_ledger_reconcile_drifted_subscriptions gauge" in metrics
        assert "churn_ledger_reconcile_drifted_subscriptions{" not in metrics
