"""Alembic environment: runs against the engine handed over by service.db.alembic_config."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine

from service.models import Base

config = context.config
engine: Engine | None = config.attributes.get("engine")
if engine is None:  # plain `alembic` CLI use: fall back to settings
    from service.db import create_db_engine
    from service.settings import get_settings

    engine = create_db_engine(get_settings().database_url)

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
