"""The committed OpenAPI spec is what the app serves (BI tools generate clients from it)."""

from __future__ import annotations

from pathlib import Path

from service.openapi import render

SPEC = Path(__file__).parents[1] / "openapi" / "openapi.json"


def test_committed_spec_matches_app():
    assert SPEC.read_text() == render(), "openapi/openapi.json is stale: run `make openapi`"


def test_spec_documents_receiver_errors():
    import json

    spec = json.loads(SPEC.read_text())
    responses = spec["paths"]["/webhooks/stripe"]["post"]["responses"]
    assert {"200", "400", "413", "503"} <= set(responses)
