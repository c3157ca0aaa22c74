"""Every receiver test runs against both ways the app answers POST /webhooks/stripe: the
ASGI fast path (the default) and FastAPI's route it shadows. They must not differ."""

from __future__ import annotations

import pytest

from service.settings import Settings
from tests.conftest import Database, make_settings


@pytest.fixture(params=[True, False], ids=["fast-path", "fastapi-route"])
def settings(request: pytest.FixtureRequest, database: Database) -> Settings:
    return make_settings(database.url, webhook_fast_path=request.param)
