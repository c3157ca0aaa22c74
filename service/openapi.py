"""Print the app's OpenAPI document (`make openapi` writes openapi/openapi.json)."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import create_engine

from service.app import create_app
from service.settings import Settings


def openapi_document() -> dict[str, Any]:
    # The spec must not depend on the environment or touch a database.
    settings = Settings(_env_file=None, database_url="sqlite://")  # type: ignore[call-arg]
    return create_app(settings, create_engine("sqlite://")).openapi()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
