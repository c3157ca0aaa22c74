"""Backfill of a simulated Stripe account against a local mock API server.

    .venv/bin/python -m bench.backfill --subscriptions 10000 [--database-url URL]

The mock runs in its own process (uvicorn) and answers like Stripe: list objects of 100,
newest first, `starting_after` pages, prices and coupons by id. The account: one customer
per subscription, starts spread over the last 400 days, monthly prices at 3 levels, 20 %
canceled, 15 % upgraded mid-period (prorations), 10 % with a trial; one paid invoice per
period; Stripe's events of the last 30 days for the renewals in that window.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from typing import Any

import httpx
import uvicorn
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.db import create_db_engine, upgrade
from tests.factories import DAY, item, price_payload, subscription_payload
from tests.jobs.sync.account import customer, event, invoice, line
from tests.live import free_port

NOW = 1_764_547_200  # 2025-12-01T00:00:00Z
PRICES = [price_payload(id=f"price_{a}", unit_amount=a) for a in (1900, 4900, 9900)]
MONTH = 30 * DAY


def simulated_account(n: int, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    rng = random.Random(seed)
    data: dict[str, list[dict[str, Any]]] = {k: [] for k in ("customers", "subscriptions",
                                                              "invoices", "events")}  # fmt: skip
    for i in range(n):
        sub_id, cus_id, si = f"sub_{i:06d}", f"cus_{i:06d}", f"si_{i:06d}"
        start = NOW - rng.randrange(1, 400) * DAY
        price = rng.choice(PRICES[:2])
        upgrade_at = (
            start + rng.randrange(1, 12) * MONTH + 10 * DAY if rng.random() < 0.15 else None
        )
        trial_end = start + 14 * DAY if rng.random() < 0.1 else None
        ended = start + rng.randrange(1, 12) * MONTH if rng.random() < 0.2 else None
        ended = ended if ended is not None and ended < NOW else None
        billed_from = trial_end or start
        invoices, period, final = [], billed_from, price
        while period < (ended or NOW):
            current = PRICES[2] if upgrade_at is not None and period > upgrade_at else price
            lines = [line(current, 1, period, period + MONTH, sub=sub_id, si=si)]
            if upgrade_at is not None and period < upgrade_at < period + MONTH:
                lines += [
                    line(price, 1, upgrade_at, period + MONTH, sub=sub_id, si=si, credit=True,
                         proration=True, amount=1000),
                    line(PRICES[2], 1, upgrade_at, period + MONTH, sub=sub_id, si=si,
                         proration=True, amount=3000),
                ]  # fmt: skip
            final = PRICES[2] if upgrade_at is not None and upgrade_at < period + MONTH else current
            invoices.append(invoice(f"in_{i:06d}_{period}", sub=sub_id, customer=cus_id,
                                    created=period, lines=lines))  # fmt: skip
            period += MONTH
        sub = subscription_payload(
            id=sub_id,
            customer=cus_id,
            items=[item(final, 1, id=si)],
            status="canceled" if ended else "active",
            created=start,
            trial_start=start if trial_end else None,
            trial_end=trial_end,
            canceled_at=ended,
            ended_at=ended,
            current_period_start=period - MONTH,
            current_period_end=period,
        )
        data["customers"].append(customer(cus_id, start))
        data["subscriptions"].append(sub)
        data["invoices"] += invoices
        if invoices and invoices[-1]["created"] >= NOW - 30 * DAY and not ended:
            renewal = invoices[-1]
            data["events"].append(event(f"evt_1R{i:022d}", "customer.subscription.updated", sub,
                                        renewal["created"]))  # fmt: skip
            data["events"].append(event(f"evt_1P{i:022d}", "invoice.paid", renewal,
                                        renewal["created"] + 3600))  # fmt: skip
    return data


def mock_app(n: int) -> Starlette:
    """Stripe's list and retrieve endpoints over the simulated account, pre-sorted."""
    data = simulated_account(n)
    lists, positions = {}, {}
    for name, objects in data.items():
        ordered = sorted(objects, key=lambda o: (o.get("created", 0), o["id"]), reverse=True)
        lists[name] = ordered
        positions[name] = {o["id"]: k for k, o in enumerate(ordered)}
    by_id = {p["id"]: p for p in PRICES}

    async def serve(request: Request) -> Response:
        parts = request.url.path.strip("/").split("/")
        params = request.query_params
        if len(parts) == 2 and parts[1] in lists:
            objects = lists[parts[1]]
            if parts[1] == "subscriptions" and params.get("status") != "all":
                objects = [o for o in objects if o["status"] != "canceled"]
                position = {o["id"]: k for k, o in enumerate(objects)}
            else:
                position = positions[parts[1]]
            after = params.get("starting_after")
            first = position[after] + 1 if after else 0
            limit = int(params.get("limit", 10))
            page = objects[first : first + limit]
            body = {"object": "list", "data": page, "has_more": first + limit < len(objects),
                    "url": request.url.path}  # fmt: skip
            return Response(json.dumps(body), media_type="application/json")
        if len(parts) == 3 and parts[2] in by_id:
            return Response(json.dumps(by_id[parts[2]]), media_type="application/json")
        error = {"error": {"type": "invalid_request_error", "message": "No such object"}}
        return Response(json.dumps(error), status_code=404, media_type="application/json")

    return Starlette(routes=[Route("/{path:path}", serve)])


def run(n: int, database_url: str | None) -> dict[str, Any]:
    from jobs.sync.backfill import BackfillOptions, run_backfill
    from jobs.sync.reconcile import reconcile
    from jobs.sync.stripe_client import StripeApi, make_stripe_client
    from service.settings import Settings
    from service.webhooks.models import StripeEvent

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.backfill", "--serve", str(port), "--subscriptions", str(n)]
    )
    tmp = tempfile.mkdtemp()
    schema: str | None = None
    url = database_url or f"sqlite:///{tmp}/backfill.db"
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                httpx.get(base + "/v1/prices/price_1900", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("mock server did not start") from None
                time.sleep(0.2)
        engine = create_db_engine(url)
        if engine.dialect.name == "postgresql":
            # A schema of its own: the benchmark database may be shared with the tests.
            schema = f"bench_backfill_{os.getpid()}"
            with engine.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            admin, url = (
                engine,
                (
                    make_url(url)
                    .update_query_dict({"options": f"-csearch_path={schema}"})
                    .render_as_string(hide_password=False)
                ),
            )
            engine = create_db_engine(url)
        upgrade(engine)
        settings = Settings(_env_file=None, database_url=url, stripe_api_key="sk_test_bench",
                            stripe_api_base=base)  # type: ignore[call-arg]  # fmt: skip
        api = StripeApi(make_stripe_client(settings))
        with Session(engine, expire_on_commit=False) as session:
            started = time.perf_counter()
            report = run_backfill(session, api, BackfillOptions(now=NOW), settings.ledger_options())
            seconds = time.perf_counter() - started
            events = session.scalar(select(func.count()).select_from(StripeEvent))
            # The import's own check: every live subscription's MRR against Stripe's.
            started = time.perf_counter()
            drift = reconcile(session, api, settings.ledger_options(), now=NOW)
            reconcile_seconds = time.perf_counter() - started
        return {
            "subscriptions": n,
            "database": engine.dialect.name,
            "seconds": round(seconds, 1),
            "requests": report.requests,
            "stored_events": events,
            "fetched": {k: v.fetched for k, v in report.resources.items()},
            "import_seconds": {k: round(v.seconds, 1) for k, v in report.resources.items()},
            "projection_seconds": round(report.projection_seconds, 1),
            "customers_projected": report.projected_customers,
            "reconcile_seconds": round(reconcile_seconds, 1),
            "reconcile_checked": drift.checked,
            "reconcile_drifted": len(drift.differences),
        }
    finally:
        server.terminate()
        server.wait()
        if schema is not None:
            engine.dispose()
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL"))
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        app = mock_app(args.subscriptions)
        uvicorn.run(app, host="127.0.0.1", port=args.serve, log_level="warning", access_log=False)
        return
    print(json.dumps(run(args.subscriptions, args.database_url), indent=2))


if __name__ == "__main__":
    main()
