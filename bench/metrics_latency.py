"""Latency of the metrics API over a generated ledger (issue 7: p95 < 50 ms).

    .venv/bin/python -m bench.metrics_latency --customers 100000 --months 36

Per engine (SQLite, PostgreSQL): writes MrrMovement and SubscriptionState rows straight
into a fresh database (numpy-generated histories; COPY on PostgreSQL, one executemany on
SQLite), runs the metrics job (`churn-ledger jobs run`), starts the service in a uvicorn
process of its own and times GET /v1/metrics/churn and /v1/metrics/mrr with `--months`
monthly intervals over keep-alive HTTP, as a BI tool would call them. A bare /healthz on
the same server is timed in the same rounds: the machine is shared and noisy, so the
difference to it says more than the absolute figures.

`run()` is what `make bench` (bench/__main__.py) calls.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from jobs.metrics.refresh import refresh
from service.db import create_db_engine, upgrade
from tests.live import free_port

# Not imported from bench.__main__: that module calls run(), and `python -m bench` runs it
# as __main__, so importing it back would execute it a second time.
PG_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).parent / "results"
API_KEY = "bench_metrics_key_0123456789"
ENDPOINTS = {"healthz": "/healthz", "churn": "/v1/metrics/churn", "mrr": "/v1/metrics/mrr"}
TARGET_P95_MS = 50

START = date(2023, 1, 1)
PRICES = np.array([2900, 4900, 9900, 19900, 49900])


def generate(customers: int, days: int, seed: int = 7) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Histories vectorized over customers, one loop over the (few) change steps."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"cus_{i:07d}" for i in range(customers)])
    eur = rng.random(customers) < 0.1
    day = rng.integers(0, days, customers)
    mrr = np.zeros(customers, dtype=np.int64)
    rows = []
    for step in range(8):
        if step == 0:
            new = PRICES[rng.integers(0, len(PRICES), customers)]
            alive = np.ones(customers, dtype=bool)
        else:
            day = day + rng.geometric(1 / 120, customers)
            alive = (day < days) & (rng.random(customers) < 0.6)
            roll = rng.random(customers)
            new = np.where(
                mrr == 0,
                PRICES[rng.integers(0, len(PRICES), customers)],  # reactivation
                np.where(roll < 0.4, 0, np.where(roll < 0.7, mrr * 3 // 2, mrr * 7 // 10)),
            )
        idx = np.flatnonzero(alive & (new != mrr))
        rows.append(pd.DataFrame({"i": idx, "day": day[idx], "from_mrr": mrr[idx],
                                  "to_mrr": new[idx]}))  # fmt: skip
        mrr[idx] = new[idx]
    ledger = pd.concat(rows, ignore_index=True).sort_values(["i", "day"])
    ledger = ledger.drop_duplicates(["i", "day"], keep="last")
    ledger["from_mrr"] = ledger.groupby("i")["to_mrr"].shift(fill_value=0)
    ledger = ledger[ledger["from_mrr"] != ledger["to_mrr"]]
    seen = ledger.groupby("i").cumcount() > 0
    up, down = ledger["to_mrr"] > ledger["from_mrr"], ledger["to_mrr"] == 0
    ledger["movement"] = np.select(
        [ledger["from_mrr"] == 0, down, up],
        [np.where(seen, "reactivation", "new"), "churn", "expansion"],
        "contraction",
    )
    rate = np.where(eur[ledger["i"]], 1.1, 1.0)
    from_r = np.rint(ledger["from_mrr"] * rate).astype(np.int64)
    to_r = np.rint(ledger["to_mrr"] * rate).astype(np.int64)
    frame = pd.DataFrame(
        {
            "account": "", "customer_id": ids[ledger["i"]],
            "day": [START + timedelta(days=int(d)) for d in ledger["day"]],
            "movement": ledger["movement"], "currency": np.where(eur[ledger["i"]], "eur", "usd"),
            "from_mrr": ledger["from_mrr"], "to_mrr": ledger["to_mrr"],
            "delta": ledger["to_mrr"] - ledger["from_mrr"], "reporting_currency": "usd",
            "fx_rate": np.where(eur[ledger["i"]], "1.1", "1"), "from_mrr_reporting": from_r,
            "to_mrr_reporting": to_r, "delta_reporting": to_r - from_r, "event_ids": "[]",
            "subscription_ids": "[]",
            "churn_reason": np.where(ledger["movement"] == "churn", "voluntary", None),
        }
    )  # fmt: skip
    states = pd.DataFrame(
        {
            "account": "", "subscription_id": [f"sub_{c[4:]}" for c in ids], "customer_id": ids,
            "status": np.where(mrr > 0, "active", "canceled"),
            "currency": np.where(eur, "eur", "usd"), "mrr": mrr,
            "plan": [f"price_{p}" for p in PRICES[rng.integers(0, len(PRICES), customers)]],
            "billing_interval": np.where(rng.random(customers) < 0.8, "month", "year"),
            "cancel_at_period_end": False, "last_event_id": "evt", "metadata": "{}",
        }
    )  # fmt: skip
    return frame, states


def copy(session: Session, table: str, frame: pd.DataFrame) -> None:
    """PostgreSQL: COPY, the fastest bulk path."""
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False, na_rep="\\N")
    cursor = session.connection().connection.cursor()
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT csv, NULL '\\N')") as cp:
        cp.write(buffer.getvalue())


def insert_many(session: Session, table: str, frame: pd.DataFrame) -> None:
    """SQLite: one executemany on the driver connection, no ORM or Core per row. Dates
    as ISO text, as SQLAlchemy stores them there."""
    out = frame.copy()
    for column in out.columns:
        if len(out) and isinstance(out[column].iloc[0], date):
            out[column] = [d.isoformat() for d in out[column]]
    rows = out.astype(object).where(out.notna(), None).itertuples(index=False, name=None)
    cursor = session.connection().connection.driver_connection.cursor()
    assert isinstance(cursor, sqlite3.Cursor)
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    marks = ", ".join("?" for _ in frame.columns)
    cursor.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


@contextmanager
def database(engine_name: str, workdir: Path) -> Iterator[str]:
    """A fresh, migrated database: a SQLite file or a PostgreSQL schema (dropped after)."""
    if engine_name == "sqlite":
        url = f"sqlite:///{workdir / f'metrics-{uuid.uuid4().hex[:8]}.db'}"
        engine = create_db_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_db_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    rendered = url.render_as_string(hide_password=False)
    try:
        engine = create_db_engine(rendered)
        upgrade(engine)
        engine.dispose()
        yield rendered
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def load(engine: Engine, ledger: pd.DataFrame, states: pd.DataFrame, today: date) -> dict:
    """Bulk-load the ledger and run the metrics job; seconds of each."""
    write = copy if engine.dialect.name == "postgresql" else insert_many
    started = time.perf_counter()
    with Session(engine) as session:
        write(session, "mrr_movements", ledger)
        write(session, "subscription_states", states)
        session.commit()
    loaded = time.perf_counter()
    with Session(engine) as session:
        refresh(session, today=today)
        session.commit()
    return {"load": round(loaded - started, 2), "jobs_run": round(time.perf_counter() - loaded, 2)}


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return round(int(line.split()[1]) / 1024, 1)


@contextmanager
def server(url: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The service in a uvicorn process of its own, as deployed (projector included)."""
    port = free_port()
    env = dict(os.environ, DATABASE_URL=url, API_KEYS=API_KEY, LOG_LEVEL="WARNING")
    # uvicorn's own CLI, not this module: its imports (pandas, numpy) would count in the
    # server's RSS.
    command = ["-m", "uvicorn", "--factory", "service.app:create_app", "--port", str(port),
               "--log-level", "warning", "--no-access-log"]  # fmt: skip
    proc = subprocess.Popen([sys.executable, *command], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                httpx.get(base + "/healthz", timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _summary(timings: list[float]) -> dict:
    return {
        "p50_ms": round(statistics.median(timings), 2),
        "p95_ms": round(statistics.quantiles(timings, n=100)[94], 2),
        "requests": len(timings),
    }


def measure(base: str, months: int, requests: int) -> dict[str, dict]:
    """Sequential keep-alive requests, one of each endpoint per round in a rotating
    order, so that the machine's noise falls on all of them alike."""
    end = date(START.year + months // 12, 1 + months % 12, 1)
    params = {"start": START.isoformat(), "end": end.isoformat(), "interval": "month"}
    timings: dict[str, list[float]] = {name: [] for name in ENDPOINTS}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {API_KEY}"}) as client:
        for name in ("churn", "mrr"):
            first = client.get(ENDPOINTS[name], params=params)
            assert first.status_code == 200, first.text
            assert len(first.json()["data"]) == months
        names = list(ENDPOINTS)
        for n in range(10 + requests):  # the first rounds warm caches and are dropped
            for name in names[n % 3 :] + names[: n % 3]:
                t0 = time.perf_counter()
                response = client.get(ENDPOINTS[name], params=params)
                elapsed = (time.perf_counter() - t0) * 1000
                assert response.status_code == 200, response.text
                if n >= 10:
                    timings[name].append(elapsed)
    return {name: _summary(t) for name, t in timings.items()}


def run(
    customers: int = 100_000,
    months: int = 36,
    engines: tuple[str, ...] = ("sqlite", "postgres"),
    requests: int = 200,
) -> dict:
    """Per engine: {"churn" | "mrr" | "healthz": {p50_ms, p95_ms, requests},
    "setup_seconds": {load, jobs_run}, "server_peak_rss_mb", "ledger_rows",
    "generate_seconds"}."""
    started = time.perf_counter()
    days = (date(START.year + months // 12, 1 + months % 12, 1) - START).days
    ledger, states = generate(customers, days)
    generated = round(time.perf_counter() - started, 2)
    today = START + timedelta(days=days - 1)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="churn-metrics-bench-") as tmp:
        for name in engines:
            with database(name, Path(tmp)) as url:
                engine = create_db_engine(url)
                try:
                    setup = load(engine, ledger, states, today)
                finally:
                    engine.dispose()
                with server(url) as (base, proc):
                    result: dict = measure(base, months, requests)
                    result["server_peak_rss_mb"] = _peak_rss_mb(proc.pid)
            result.update(setup_seconds=setup, generate_seconds=generated,
                          ledger_rows=len(ledger), customers=customers)  # fmt: skip
            results[name] = result
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=36)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--engines", default="sqlite,postgres")
    args = parser.parse_args()
    engines = tuple(args.engines.split(","))
    results = run(args.customers, args.months, engines, args.requests)

    from rich.console import Console
    from rich.table import Table

    title = (
        f"metrics API, {args.customers} customers, {args.months} monthly intervals, "
        f"{args.requests} requests each (target p95 < {TARGET_P95_MS} ms)"
    )
    table = Table(title=title)
    columns = ("engine", "endpoint", "p50 ms", "p95 ms", "p50 − healthz", "setup s", "peak RSS MB")
    for col in columns:
        table.add_column(col, justify="right")
    for engine_name, r in results.items():
        setup = f"{r['setup_seconds']['load']} + {r['setup_seconds']['jobs_run']} job"
        for name in ENDPOINTS:
            e = r[name]
            net = round(e["p50_ms"] - r["healthz"]["p50_ms"], 2)
            table.add_row(engine_name, name, str(e["p50_ms"]), str(e["p95_ms"]),
                          "-" if name == "healthz" else str(net), setup,
                          str(r["server_peak_rss_mb"]))  # fmt: skip
    Console().print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"metrics-latency-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    Console().print(f"written to {path}")


if __name__ == "__main__":
    main()
