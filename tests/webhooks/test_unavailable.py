"""The database goes away: the receiver answers 503 (Stripe retries) and writes nothing."""

from __future__ import annotations

import sqlite3
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.orm import Session

from service.app import create_app
from service.db import create_db_engine
from service.webhooks.models import StripeEvent
from tests.conftest import Database, make_settings
from tests.signing import event_body, signed_headers
from tests.webhooks.test_endpoints import make_event

URL = "/webhooks/stripe"


def count_events(db: Database) -> int:
    with Session(db.engine) as session:
        return session.scalar(select(func.count()).select_from(StripeEvent)) or 0


def assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["type"] == "unavailable"
    assert response.headers["retry-after"]
    assert "Traceback" not in response.text


class TestDatabaseUnavailable:
    def test_stopped_database(self, backend: str, tmp_path):
        if backend == "sqlite":
            # A path whose directory cannot exist: every connect fails.
            (tmp_path / "blocker").write_text("")
            url = f"sqlite:///{tmp_path / 'blocker' / 'db.sqlite'}"
            engine = create_engine(url)
        else:
            url = "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2"
            engine = create_db_engine(url)
        app = create_app(make_settings(url), engine)
        client = TestClient(app, raise_server_exceptions=False)
        body = event_body(make_event())
        assert_unavailable(client.post(URL, content=body, headers=signed_headers(body)))
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["error"]["type"] == "unavailable"
        assert client.get("/healthz").status_code == 200

    def test_connection_lost_mid_request(self, fresh_database: Database, backend: str):
        """The database fails in the middle of the request: 503, nothing half-written,
        and Stripe's retry is stored once the database is back."""
        db = fresh_database
        killed: list[bool] = []

        if backend == "postgresql":
            admin = create_db_engine(db.url)

            @event.listens_for(db.engine, "after_cursor_execute")
            def kill(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                if statement.startswith("INSERT INTO stripe_events") and not killed:
                    killed.append(True)
                    pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                    with admin.begin() as other:
                        other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        else:
            # SQLite has no server to kill; another writer grabbing the lock is its
            # equivalent: the commit cannot happen.
            blocker = sqlite3.connect(db.url.removeprefix("sqlite:///"), isolation_level=None)

            @event.listens_for(db.engine, "connect")
            def short_timeout(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute("PRAGMA busy_timeout = 200")

            db.engine.dispose()
            blocker.execute("BEGIN EXCLUSIVE")

        app = create_app(make_settings(db.url), db.engine)
        client = TestClient(app, raise_server_exceptions=False)
        body = event_body(make_event(event_id="evt_killed"))
        response = client.post(URL, content=body, headers=signed_headers(body))
        assert_unavailable(response)
        if backend == "sqlite":
            blocker.execute("ROLLBACK")
            blocker.close()
        else:
            assert killed == [True]
        assert count_events(db) == 0

        # Stripe retries the same event later; the database is back: stored once.
        retry = client.post(URL, content=body, headers=signed_headers(body))
        assert retry.status_code == 200, retry.text
        assert retry.json() == {"received": True, "duplicate": False}
        assert count_events(db) == 1
