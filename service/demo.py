"""`churn-ledger demo`: a real server on a fresh SQLite database, fed signed events.

The simulated account here is deliberately small; the full simulator (issue 7) replaces
`_demo_events` with a seeded Stripe account and the summary with the metrics API.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from service.app import create_app
from service.db import create_db_engine, upgrade
from service.settings import Settings

DEMO_START = 1735689600  # 2025-01-01T00:00:00Z


def _sign(body: bytes, secret: str) -> str:
    t = int(time.time())
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def _demo_events(subscriptions: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    for n in range(subscriptions):
        sub, cus = f"sub_demo{n:04d}", f"cus_demo{n:04d}"
        created = DEMO_START + n * 3600
        for i, type_ in enumerate(
            ["customer.subscription.created", "customer.subscription.updated"]
        ):
            yield {
                "id": f"evt_demo{n:04d}_{i}",
                "object": "event",
                "api_version": "2025-03-31.basil",
                "created": created + i * 86400,
                "livemode": False,
                "type": type_,
                "data": {
                    "object": {
                        "id": sub,
                        "object": "subscription",
                        "customer": cus,
                        "status": "active",
                        "currency": "usd",
                        "items": {
                            "object": "list",
                            "data": [
                                {
                                    "id": f"si_demo{n:04d}",
                                    "object": "subscription_item",
                                    "quantity": rng.randint(1, 5),
                                    "price": {
                                        "id": "price_demo_monthly",
                                        "object": "price",
                                        "currency": "usd",
                                        "unit_amount": 4900,
                                        "recurring": {"interval": "month", "interval_count": 1},
                                    },
                                }
                            ],
                        },
                    }
                },
            }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serve(settings: Settings) -> Iterator[str]:
    port = _free_port()
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("server failed to start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def run_demo(subscriptions: int, console: Console, seed: int = 7) -> dict[str, int]:
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="churn-ledger-demo-"))
    secret = "whsec_" + secrets.token_hex(16)
    api_key = secrets.token_hex(16)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{workdir / 'demo.db'}",
        stripe_webhook_secrets=secret,  # type: ignore[arg-type]
        api_keys=api_key,  # type: ignore[arg-type]
    )
    upgrade(create_db_engine(settings.database_url))

    events = list(_demo_events(subscriptions, rng))
    # Stripe delivers at least once and in no particular order: so does the demo.
    deliveries = events + rng.sample(events, k=max(1, len(events) // 10))
    rng.shuffle(deliveries)

    counts = {"sent": 0, "stored": 0, "duplicate": 0, "rejected": 0}
    with _serve(settings) as base, httpx.Client(base_url=base, timeout=10) as http:
        console.print(f"server on [bold]{base}[/bold], database {settings.database_url}")
        with Progress(console=console) as progress:
            task = progress.add_task("sending signed webhooks", total=len(deliveries) + 1)
            for event in deliveries:
                body = json.dumps(event, indent=2).encode()
                answer = http.post(
                    "/webhooks/stripe",
                    content=body,
                    headers={"Stripe-Signature": _sign(body, secret)},
                )
                counts["sent"] += 1
                if answer.status_code != 200:
                    counts["rejected"] += 1
                else:
                    counts["duplicate" if answer.json()["duplicate"] else "stored"] += 1
                progress.advance(task)
            forged = http.post(
                "/webhooks/stripe", content=b"{}", headers={"Stripe-Signature": "t=1,v1=00"}
            )
            counts["rejected"] += forged.status_code == 400
            progress.advance(task)
        ready = http.get("/readyz").json()

    table = Table(title="churn-ledger demo")
    for column in ("sent", "stored", "duplicate", "rejected (forged)", "unhandled backlog"):
        table.add_column(column, justify="right")
    table.add_row(
        str(counts["sent"] + 1),
        str(counts["stored"]),
        str(counts["duplicate"]),
        str(counts["rejected"]),
        str(ready.get("unhandled_events")),
    )
    console.print(table)
    console.print(
        "Try it yourself:\n"
        f"  DATABASE_URL={settings.database_url} STRIPE_WEBHOOK_SECRETS={secret} "
        "churn-ledger serve\n"
        "  curl -s localhost:8000/readyz; curl -s localhost:8000/metrics | grep churn_ledger"
    )
    return counts
