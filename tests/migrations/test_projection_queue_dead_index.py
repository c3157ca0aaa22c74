"""Migration 0018: the partial index of dead letters on the projection queue."""

from __future__ import annotations

from sqlalchemy import Engine, inspect, text

from service.db import downgrade, upgrade
from tests.conftest import Database
from tests.migrations.revisions import revision_named

NAME = "ix_projection_queue_dead"


def _definition(engine: Engine) -> str | None:
    """The index's SQL as the database keeps it, or None."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return conn.scalar(
                text("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :n"),
                {"n": NAME},
            )
        return conn.scalar(
            text(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                "AND indexname = :n"
            ),
            {"n": NAME},
        )


class TestDeadLetterIndex:
    def test_only_dead_letters_are_indexed(self, fresh_database: Database):
        sql = _definition(fresh_database.engine)
        assert sql is not None
        assert "projection_queue" in sql and "(id)" in sql.replace('"', "")
        assert "dead_at IS NOT NULL" in sql

    def test_downgrade_drops_it_and_upgrade_brings_it_back(self, fresh_database: Database):
        engine = fresh_database.engine
        revision = revision_named("_projection_queue_dead_index")
        downgrade(engine, str(revision.down_revision))
        assert _definition(engine) is None
        assert "projection_queue" in inspect(engine).get_table_names()
        upgrade(engine)
        assert _definition(engine) is not None
