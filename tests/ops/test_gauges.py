"""/readyz during a backlog, and the gauges that move without anyone calling it."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from service.app import create_app
from service.ledger.repository import LedgerRepository
from service.webhooks.schemas import parse_event
from service.webhooks.service import store_event
from tests.conftest import Database, make_settings
from tests.projector.test_worker import sub_event


def _gauge(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


class TestBacklog:
    def test_readyz_stays_ready_and_gauges_move_by_themselves(self, fresh_database: Database):
        with Session(fresh_database.engine) as session:
            for n in range(3):
                body = sub_event(n, f"cus_{n}")
                store_event(session, body, parse_event(body))
            LedgerRepository(session).mark_changed("", [], ["cus_0"])
            session.commit()
        settings = make_settings(
            fresh_database.url, projector_enabled=False, readyz_max_backlog=1,
            gauges_interval_s=0.05,
        )  # fmt: skip
        app = create_app(settings, fresh_database.engine)
        with TestClient(app) as client:
            deadline = time.monotonic() + 10
            text = ""
            while time.monotonic() < deadline:
                text = client.get("/metrics").text
                if _gauge(text, "churn_ledger_unhandled_events") == 3:
                    break
                time.sleep(0.05)
            # No /readyz was called: the updater thread set them.
            assert _gauge(text, "churn_ledger_unhandled_events") == 3
            lag = _gauge(text, "churn_ledger_projection_lag_seconds")
            assert lag is not None and lag >= 0
            stale = _gauge(text, "churn_ledger_metrics_freshness_seconds")
            assert stale is not None and stale >= 0
            ready = client.get("/readyz")
        # A burst's backlog must not take a healthy receiver out of a load balancer.
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ready"
        assert (body["unhandled_events"], body["backlog_over_threshold"]) == (3, True)
        assert body["projection_lag_s"] >= 0 and body["metrics_stale_s"] >= 0
