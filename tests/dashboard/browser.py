"""Debian's headless Chromium, driven by Playwright, against a real server on a seeded
database: the pieces the dashboard tests share.

The browser is the system's /usr/bin/chromium (apt's `chromium`, installed by .ci/run); no
browser is ever downloaded. Where it is missing the tests skip, except under
REQUIRE_BROWSER=1 (CI), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.db import create_db_engine, upgrade
from service.kit.signing import sign
from service.settings import Settings
from sim.simulate import Simulation, event_bytes, simulate
from tests.conftest import API_KEY, WRITE_KEY
from tests.signing import WEBHOOK_SECRET

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# The closed network refuses Chromium's own background connections; these keep it from
# trying (and from waiting on them).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
ARTIFACTS = Path(
    os.environ.get("TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts")
)
DEMO_RATES = {"eur": "1.08", "gbp": "1.27", "jpy": "0.0067"}


def require_browser() -> Any:
    """The Playwright module, or a skip (a failure under REQUIRE_BROWSER=1)."""
    missing = None
    try:
        from playwright import sync_api
    except ImportError as exc:
        missing = f"playwright is not installed ({exc})"
    if missing is None and not shutil.which(CHROMIUM):  # an executable file, or on PATH
        missing = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    if missing:
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(missing + " (REQUIRE_BROWSER=1)")
        pytest.skip(missing)
    return sync_api


def seeded_settings(workdir: Path) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{workdir / 'dashboard.db'}",
        stripe_webhook_secrets=WEBHOOK_SECRET,  # type: ignore[arg-type]
        api_keys=API_KEY,  # type: ignore[arg-type]
        write_api_keys=WRITE_KEY,  # type: ignore[arg-type]
        projector_mode="thread",
    )


def migrate(settings: Settings) -> None:
    engine = create_db_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()


def seed(base: str, settings: Settings, *, customers: int, months: int, seed_: int) -> Simulation:
    """A simulated Stripe account delivered as signed webhooks to the live server, the
    ledger projected and the metric tables refreshed by the server itself."""
    sim = simulate(customers=customers, months=months, seed=seed_)
    with httpx.Client(base_url=base, timeout=30) as http:
        rates = [{"currency": c, "day": "2000-01-01", "rate": r} for c, r in DEMO_RATES.items()]
        writer = {"Authorization": f"Bearer {WRITE_KEY}"}  # rates need a write-scoped key
        http.put("/v1/fx-rates", headers=writer, json={"rates": rates}).raise_for_status()

        def deliver(event: dict[str, Any]) -> None:
            body = event_bytes(event)
            signature = sign(body, WEBHOOK_SECRET, int(time.time()))
            answer = http.post(
                "/webhooks/stripe", content=body, headers={"Stripe-Signature": signature}
            )
            answer.raise_for_status()

        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(deliver, sim.events))
        # What the dashboard shows is what the server keeps fresh by itself: a refresh
        # of our own here would race the server's refresher for SQLite's write lock.
        deadline = time.monotonic() + 120
        reader = {"Authorization": f"Bearer {API_KEY}"}
        while (
            http.get("/readyz").json().get("unhandled_events", 1)
            or http.get("/v1/metrics/mrr", headers=reader).json()["stale"]
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the projector or the metrics refresh did not catch up")
            time.sleep(0.1)
    return sim


@contextmanager
def chromium(user_data_dir: Path) -> Iterator[Any]:
    """A fresh profile each run: nothing of a previous run (a stored key) carries over."""
    sync_api = require_browser()
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            context.close()


def screenshot(page: Any, name: str) -> Path:
    """A full-page screenshot under test-artifacts/dashboard/ (gitignored), for people."""
    target = ARTIFACTS / "dashboard" / f"{name}.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)
    return target
