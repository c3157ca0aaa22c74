"""`churn-ledger demo`: a simulated Stripe account feeds a real server; the API answers.

A new user's first contact: a fresh SQLite database, a real uvicorn server on a free
port, a seeded Stripe account (sim.simulate) delivering signed webhooks over HTTP with
duplicates and out-of-order deliveries, then the metrics API's answers next to the
simulator's own truth.
"""

from __future__ import annotations

import random
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from service.app import create_app
from service.db import create_db_engine, upgrade
from service.kit.signing import sign
from service.settings import Settings
from sim.simulate import Simulation, event_bytes, simulate

# Fixed demo rates to USD, effective long before the simulated account starts.
DEMO_RATES = {"eur": "1.08", "gbp": "1.27", "jpy": "0.0067"}


@dataclass
class DemoResult:
    sent: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    months: list[dict[str, Any]] = field(default_factory=list)
    usd_mrr_api: dict[str, int] = field(default_factory=dict)  # month end -> API MRR (usd)
    usd_mrr_truth: dict[str, int] = field(default_factory=dict)  # month end -> truth (usd)
    base_url: str = ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _serve(settings: Settings, port: int | None = None) -> Iterator[str]:
    port = port or _free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="error", lifespan="on"
    )
    server = uvicorn.Server(config)
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
        thread.join(timeout=15)


def _deliveries(sim: Simulation, rng: random.Random) -> list[dict[str, Any]]:
    # Stripe delivers at least once and in no guaranteed order: a few duplicates, and
    # neighbours swapped within small windows.
    events = list(sim.events) + rng.sample(sim.events, k=len(sim.events) // 20)
    events.sort(key=lambda e: e["created"])
    window = 25
    for i in range(0, len(events), window):
        part = events[i : i + window]
        rng.shuffle(part)
        events[i : i + window] = part
    return events


def _month_starts(first: date, last: date) -> list[date]:
    months, d = [], first.replace(day=1)
    while d <= last:
        months.append(d)
        d = date(d.year + (d.month == 12), d.month % 12 + 1, 1)
    return months


def run_demo(
    *,
    customers: int = 100,
    months: int = 12,
    seed: int = 7,
    console: Console | None = None,
    serve: bool = False,
    port: int | None = None,
    until: threading.Event | None = None,
) -> DemoResult:
    """With `serve`, the server stays up after the report (on `port`, default a free
    one) until Ctrl-C, or until `until` is set (tests)."""
    console = console or Console()
    rng = random.Random(seed)
    workdir = Path(tempfile.mkdtemp(prefix="churn-ledger-demo-"))
    secret = "whsec_" + secrets.token_hex(16)
    api_key = secrets.token_hex(16)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{workdir / 'demo.db'}",
        stripe_webhook_secrets=secret,  # type: ignore[arg-type]
        # The demo also loads FX rates: a write key (it reads too).
        write_api_keys=api_key,  # type: ignore[arg-type]
    )
    engine = create_db_engine(settings.database_url)
    upgrade(engine)

    sim = simulate(customers=customers, months=months, seed=seed)
    deliveries = _deliveries(sim, rng)
    result = DemoResult()
    auth = {"Authorization": f"Bearer {api_key}"}
    lock = threading.Lock()

    with _serve(settings, port) as base, httpx.Client(base_url=base, timeout=30) as http:
        console.print(
            f"server on [bold]{base}[/bold]; simulated account: {customers} customers, "
            f"{months} months, {len(sim.events)} Stripe events"
        )
        http.put(
            "/v1/fx-rates",
            headers=auth,
            json={
                "rates": [
                    {"currency": c, "day": "2000-01-01", "rate": r} for c, r in DEMO_RATES.items()
                ]
            },
        ).raise_for_status()

        def deliver(event: dict[str, Any]) -> None:
            body = event_bytes(event)
            answer = http.post(
                "/webhooks/stripe",
                content=body,
                headers={"Stripe-Signature": sign(body, secret, int(time.time()))},
            )
            with lock:
                result.sent += 1
                if answer.status_code != 200:
                    result.rejected += 1
                elif answer.json()["duplicate"]:
                    result.duplicates += 1
                else:
                    result.stored += 1

        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("signed webhooks", total=len(deliveries))
            with ThreadPoolExecutor(max_workers=8) as pool:
                for _ in pool.map(deliver, deliveries):
                    progress.advance(task)
            waiting = progress.add_task("projecting the ledger", total=None)
            while http.get("/readyz").json().get("unhandled_events", 1):
                time.sleep(0.1)
            progress.update(waiting, completed=1, total=1)
            # No job to run: the server refreshes the metric tables itself, right after
            # projecting; the answer says when it has caught up (`stale`).
            waiting = progress.add_task("metrics catching up", total=None)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                fresh = http.get("/v1/metrics/mrr", headers=auth).json()
                if fresh.get("as_of") and not fresh.get("stale", True):
                    break
                time.sleep(0.1)
            progress.update(waiting, completed=1, total=1)

        # The last six whole months the simulated account lived through.
        first = datetime.fromtimestamp(sim.start, UTC).date().replace(day=1)
        end = datetime.fromtimestamp(sim.until, UTC).date().replace(day=1)
        month_list = _month_starts(first, end)[-7:]
        window = {"start": month_list[0].isoformat(), "end": end.isoformat(), "interval": "month"}
        mrr = http.get("/v1/metrics/mrr", headers=auth, params=window).json()["data"]
        churn = http.get("/v1/metrics/churn", headers=auth, params=window).json()["data"]
        recovery = http.get("/v1/metrics/recovery", headers=auth, params=window).json()
        usd = http.get(
            "/v1/metrics/mrr", headers=auth, params={**window, "currency_code": "usd"}
        ).json()["data"]
        result.base_url = base
        if serve:
            _report(result, mrr, churn, recovery, usd, sim)
            _print(console, result, settings, secret, api_key, serving=base)
            _wait(console, until)
            return result

    _report(result, mrr, churn, recovery, usd, sim)
    _print(console, result, settings, secret, api_key, serving=None)
    return result


def _wait(console: Console, until: threading.Event | None) -> None:
    stop = until or threading.Event()
    try:
        # Short waits: Ctrl-C interrupts the main thread between them.
        while not stop.wait(0.2):
            pass
    except KeyboardInterrupt:
        console.print("stopping the server")


def _report(
    result: DemoResult,
    mrr: list[dict[str, Any]],
    churn: list[dict[str, Any]],
    recovery: dict[str, Any],
    usd: list[dict[str, Any]],
    sim: Simulation,
) -> None:
    periods = recovery.get("data", [])
    for i, (m, c) in enumerate(zip(mrr, churn, strict=True)):
        r = periods[i] if i < len(periods) else {}
        result.months.append(
            {
                "month": m["period_start"][:7],
                "mrr": m["mrr"],
                "arr": m["arr"],
                "customers": m["customers"],
                "churn": c,
                "recovery": r,
            }
        )
    for row in usd:
        end = date.fromisoformat(row["period_end"])
        last = date.fromordinal(end.toordinal() - 1)
        result.usd_mrr_api[last.isoformat()] = row["mrr"]["amount"]
        result.usd_mrr_truth[last.isoformat()] = sim.truth.total_mrr(last).get("usd", 0)


def _dollars(cents: int) -> str:
    return f"${cents // 100:,}"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _print(
    console: Console,
    r: DemoResult,
    settings: Settings,
    secret: str,
    key: str,
    *,
    serving: str | None,
) -> None:
    console.print(
        f"webhooks: {r.sent} sent, {r.stored} stored, {r.duplicates} duplicates acknowledged, "
        f"{r.rejected} rejected"
    )
    table = Table(title="last months, reporting currency USD")
    for col in (
        "month",
        "MRR",
        "ARR",
        "cust.",
        "net churn",
        "gross churn",
        "neg. churn",
        "recovered",
    ):
        table.add_column(col, justify="right")
    for m in r.months:
        c, rec = m["churn"], m["recovery"]
        table.add_row(
            m["month"],
            _dollars(m["mrr"]["amount"]),
            _dollars(m["arr"]["amount"]),
            str(m["customers"]),
            _rate(c["net_mrr_churn_rate"]),
            _rate(c["gross_mrr_churn_rate"]),
            {True: "yes", False: "no", None: "—"}[c["negative_churn"]],
            _rate(rec.get("recovery_rate_by_count")),
        )
    console.print(table)
    matches = r.usd_mrr_api == r.usd_mrr_truth
    console.print(
        "USD MRR from the API equals the simulator's truth at every month end: "
        + (
            "[green]yes[/green]"
            if matches
            else f"[red]no[/red] {r.usd_mrr_api} vs {r.usd_mrr_truth}"
        )
    )
    if serving:
        console.print(
            f"\nThe demo's server keeps running (Ctrl-C stops it); its database is "
            f"{settings.database_url}\n"
            f"  curl -s -H 'Authorization: Bearer {key}' '{serving}/v1/metrics/churn'\n"
            f"\nDashboard: [bold]{serving}/dashboard[/bold]\nAPI key:   [bold]{key}[/bold]"
        )
        return
    console.print(
        "\nTry it yourself (the demo's server has stopped; this one keeps running):\n"
        f"  DATABASE_URL={settings.database_url} API_KEYS={key} "
        f"STRIPE_WEBHOOK_SECRETS={secret} .venv/bin/churn-ledger serve &\n"
        f"  curl -s -H 'Authorization: Bearer {key}' "
        "'localhost:8000/v1/metrics/churn?interval=quarter'\n"
        f"  curl -s -H 'Authorization: Bearer {key}' "
        "'localhost:8000/v1/metrics/mrr?format=csv'\n"
        f"  curl -s -H 'Authorization: Bearer {key}' localhost:8000/v1/failed-payments\n"
        "  curl -s localhost:8000/metrics | grep churn_ledger_webhook\n"
        "\nDashboard: [bold]http://localhost:8000/dashboard[/bold] (with that server running; "
        "or `churn-ledger demo --serve` keeps the demo's own server up)\n"
        f"API key:   [bold]{key}[/bold]"
    )
