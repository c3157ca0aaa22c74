"""Migrations on both databases, and refusing to serve on an unmigrated one."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from service.app import create_app
from service.db import (
    DatabaseNotMigratedError,
    current_revision,
    downgrade,
    ensure_migrated,
    head_revision,
    upgrade,
)
from service.models import Base
from tests.conftest import Database, make_settings


@pytest.fixture
def empty_database(backend: str, tmp_path):
    db = Database(backend, tmp_path)
    yield db
    db.drop()


class TestMigrations:
    def test_upgrade_downgrade_upgrade(self, empty_database: Database):
        engine = empty_database.engine
        assert current_revision(engine) is None
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        tables = set(inspect(engine).get_table_names())
        assert set(Base.metadata.tables) <= tables
        downgrade(engine, "base")
        assert current_revision(engine) is None
        assert not set(Base.metadata.tables) & set(inspect(engine).get_table_names())
        upgrade(engine)
        assert current_revision(engine) == head_revision()

    def test_migrated_schema_matches_models(self, empty_database: Database):
        from alembic.autogenerate import compare_metadata
        from alembic.runtime.migration import MigrationContext

        upgrade(empty_database.engine)
        with empty_database.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []


class TestRefuseUnmigrated:
    def test_ensure_migrated_names_the_fix(self, empty_database: Database):
        with pytest.raises(DatabaseNotMigratedError, match="churn-ledger migrate"):
            ensure_migrated(empty_database.engine)

    def test_app_startup_refuses(self, empty_database: Database):
        app = create_app(make_settings(empty_database.url), empty_database.engine)
        with pytest.raises(DatabaseNotMigratedError), TestClient(app):
            pass

    def test_readyz_reports_unmigrated(self, empty_database: Database):
        app = create_app(make_settings(empty_database.url), empty_database.engine)
        response = TestClient(app).get("/readyz")
        assert response.status_code == 503
        assert response.json()["error"]["type"] == "not_migrated"

    def test_cli_serve_refuses(self, empty_database: Database, monkeypatch):
        from typer.testing import CliRunner

        from service.cli import app as cli
        from service.settings import get_settings

        monkeypatch.setenv("DATABASE_URL", empty_database.url)
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(cli, ["serve"])
        finally:
            get_settings.cache_clear()
        assert result.exit_code == 2
        assert "churn-ledger migrate" in result.output
