"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL.

Each test session migrates a fresh database per backend (its own PostgreSQL schema) to
head through Alembic; each test runs inside a transaction that is rolled back. Tests that
need real commits across connections (live server, database failures) ask for
`fresh_engine`, a database of their own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.app import create_app
from service.db import create_db_engine, get_session, get_stream_session, upgrade
from service.settings import Settings
from service.webhooks.dependencies import get_event_writer
from service.webhooks.repository import StripeEventRepository
from tests.signing import WEBHOOK_SECRET

API_KEY = "test_api_key_0123456789"  # read scope
WRITE_KEY = "test_write_key_0123456789"
BACKENDS = ["sqlite", "postgresql"]


def _postgres_url() -> str | None:
    return os.environ.get("TEST_DATABASE_URL")


def _skip_or_fail_without_postgres(
    message: str = "TEST_DATABASE_URL is not set: PostgreSQL tests skipped",
) -> None:
    if os.environ.get("REQUIRE_POSTGRES") == "1":
        pytest.fail(message + " (REQUIRE_POSTGRES=1)")
    pytest.skip(message)


class Database:
    """A migrated database of its own: a SQLite file or a PostgreSQL schema."""

    def __init__(self, backend: str, tmp_dir: Path) -> None:
        self.backend = backend
        self.schema: str | None = None
        if backend == "sqlite":
            self.url = f"sqlite:///{tmp_dir / f'{uuid.uuid4().hex}.db'}"
        else:
            base = _postgres_url()
            if not base:
                _skip_or_fail_without_postgres()
            assert base is not None
            self.schema = f"t_{uuid.uuid4().hex[:12]}"
            self._admin = create_db_engine(base)
            try:
                with self._admin.begin() as conn:
                    conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
            except OperationalError as exc:
                self._admin.dispose()
                _skip_or_fail_without_postgres(f"PostgreSQL at {base} unreachable: {exc}")
            self.url = (
                make_url(base)
                .update_query_dict({"options": f"-csearch_path={self.schema}"})
                .render_as_string(hide_password=False)
            )
        self.engine = create_db_engine(self.url)

    def migrate(self) -> Database:
        upgrade(self.engine)
        return self

    def drop(self) -> None:
        self.engine.dispose()
        if self.schema:
            with self._admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))
            self._admin.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def database(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Database]:
    db = Database(backend, tmp_path_factory.mktemp("db")).migrate()
    yield db
    db.drop()


@pytest.fixture(scope="session")
def engine(database: Database) -> Engine:
    return database.engine


@pytest.fixture
def db_session(engine: Engine) -> Iterator[Session]:
    """A session whose commits are savepoints inside one rolled-back transaction."""
    connection = engine.connect()
    transaction = connection.begin()
    session = Session(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
    )
    try:
        yield session
    finally:
        session.close()
        transaction.rollback()
        connection.close()


@pytest.fixture
def fresh_database(backend: str, tmp_path: Path) -> Iterator[Database]:
    db = Database(backend, tmp_path).migrate()
    yield db
    db.drop()


def make_settings(database_url: str, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": database_url,
        "stripe_webhook_secrets": WEBHOOK_SECRET,
        "api_keys": API_KEY,
        "write_api_keys": WRITE_KEY,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[arg-type]


@pytest.fixture
def settings(database: Database) -> Settings:
    return make_settings(database.url)


class SessionEventWriter:
    """The receiver's writer inside the test's rolled-back transaction.

    The real writer commits on connections of its own, which would outlive the test;
    its own tests (tests/webhooks/test_writer.py) run on databases of their own.
    """

    def __init__(self, session: Session) -> None:
        self.session = session

    async def store(self, values: dict[str, object]) -> int | None:
        row_id = StripeEventRepository(self.session).insert_many_if_new([values])[0]
        self.session.commit()
        return row_id


@pytest.fixture
def app(settings: Settings, engine: Engine, db_session: Session) -> FastAPI:
    application = create_app(settings, engine)

    def _session() -> Iterator[Session]:
        try:
            yield db_session
            db_session.commit()
        except BaseException:
            db_session.rollback()
            raise

    application.dependency_overrides[get_session] = _session
    application.dependency_overrides[get_stream_session] = lambda: db_session
    application.dependency_overrides[get_event_writer] = lambda: SessionEventWriter(db_session)
    return application


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    # TestClient is an httpx.Client over the ASGI app: the real HTTP stack in-process.
    # raise_server_exceptions=False: a 500 must be seen as a 500, as Stripe would see it.
    with_client = TestClient(app, raise_server_exceptions=False)
    yield with_client
    with_client.close()
