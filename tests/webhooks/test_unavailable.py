"""The database goes away: the receiver answers 503 (Stripe retries) and writes nothing."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.orm import Session

from service.app import create_app
from service.db import create_db_engine
from service.webhooks.dependencies import get_event_writer
from service.webhooks.models import StripeEvent
from service.webhooks.writer import EventWriter, LoopEventWriter
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

        if backend == "postgresql":
            # The server drops the connection as the INSERT runs, every time (the
            # writer's one retry on a new connection included), until it is "back": a
            # trigger of the test's schema ends its own backend, whichever writer and
            # driver sent the statement. The sequence counts it, outside the rollback.
            with db.engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE test_down (down boolean NOT NULL)")
                conn.exec_driver_sql("INSERT INTO test_down VALUES (true)")
                conn.exec_driver_sql("CREATE SEQUENCE test_kills")
                conn.exec_driver_sql(
                    "CREATE FUNCTION test_kill() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN IF (SELECT down FROM test_down) THEN "
                    "PERFORM nextval('test_kills'); "
                    "PERFORM pg_terminate_backend(pg_backend_pid()); END IF; "
                    "RETURN NEW; END $$"
                )
                conn.exec_driver_sql(
                    "CREATE TRIGGER test_kill BEFORE INSERT ON stripe_events "
                    "FOR EACH ROW EXECUTE FUNCTION test_kill()"
                )
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
            with db.engine.begin() as conn:
                kills = conn.exec_driver_sql(
                    "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM test_kills"
                ).scalar()
                conn.exec_driver_sql("UPDATE test_down SET down = false")
            assert kills == 2
        assert count_events(db) == 0

        # Stripe retries the same event later; the database is back: stored once.
        retry = client.post(URL, content=body, headers=signed_headers(body))
        assert retry.status_code == 200, retry.text
        assert retry.json() == {"received": True, "duplicate": False}
        assert count_events(db) == 1

    @pytest.mark.parametrize("writer_kind", ["loop", "thread"])
    def test_connection_dropped_while_idle(
        self, fresh_database: Database, backend: str, writer_kind: str
    ):
        """The database restarts between two webhooks: the writer's kept connection is
        dead; the next webhook is still stored, on a new connection, without a 503."""
        if backend != "postgresql":
            pytest.skip("SQLite has no server connection to lose")
        db = fresh_database
        app = create_app(make_settings(db.url, projector_enabled=False), db.engine)
        writer: EventWriter | None = None
        if writer_kind == "thread":
            # One writer thread, so that the connection killed is the one used next.
            writer = EventWriter(db.engine, threads=1)
            app.dependency_overrides[get_event_writer] = lambda: writer
        else:
            assert isinstance(app.state.event_writer, LoopEventWriter)  # PostgreSQL's own
        # In a `with`: one event loop for both requests, so the in-loop writer keeps its
        # connection from the first to the second.
        with TestClient(app, raise_server_exceptions=False) as client:
            first = event_body(make_event(event_id="evt_before"))
            response = client.post(URL, content=first, headers=signed_headers(first))
            assert response.status_code == 200
            admin = create_db_engine(db.url)
            with admin.begin() as conn:
                # Every idle backend of this schema's test database but our own: the
                # writer's among them.
                killed = conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE pid <> pg_backend_pid() AND datname = current_database() "
                        "AND application_name = '' AND backend_type = 'client backend' "
                        "AND state = 'idle'"
                    )
                ).all()
            admin.dispose()
            assert killed and all(ok for (ok,) in killed)
            second = event_body(make_event(event_id="evt_after"))
            response = client.post(URL, content=second, headers=signed_headers(second))
            assert response.status_code == 200, response.text
            assert response.json() == {"received": True, "duplicate": False}
        assert count_events(db) == 2
        if writer is not None:
            writer.stop()
