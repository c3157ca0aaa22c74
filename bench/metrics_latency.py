"""Latency of GET /v1/metrics/churn over a generated ledger (issue 5).

    .venv/bin/python -m bench.metrics_latency --customers 100000 --months 36

Writes MrrMovement and SubscriptionState rows straight into a fresh PostgreSQL schema
(COPY, numpy-generated histories), runs the metrics job, then times the endpoint
in-process (the full ASGI stack, no network) for `--months` monthly intervals.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import uuid
from datetime import date, timedelta

import numpy as np
import pandas as pd
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bench.__main__ import PG_URL
from jobs.aggregates import refresh
from service.app import create_app
from service.db import create_db_engine, upgrade
from tests.conftest import API_KEY, make_settings

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
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False, header=False, na_rep="\\N")
    cursor = session.connection().connection.cursor()
    columns = ", ".join(f'"{c}"' for c in frame.columns)
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN (FORMAT csv, NULL '\\N')") as cp:
        cp.write(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=36)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()

    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_db_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = create_db_engine(url.render_as_string(hide_password=False))
    try:
        upgrade(engine)
        end = date(START.year + (args.months // 12), 1 + args.months % 12, 1)
        started = time.perf_counter()
        ledger, states = generate(args.customers, (end - START).days)
        with Session(engine) as session:
            copy(session, "mrr_movements", ledger)
            copy(session, "subscription_states", states)
            session.commit()
        print(f"{len(ledger)} ledger rows, {args.customers} customers "
              f"({time.perf_counter() - started:.1f}s to generate and load)")  # fmt: skip
        with Session(engine) as session:
            result = refresh(session, today=end - timedelta(days=1))
            session.commit()
        print(f"jobs run: {result.seconds:.2f}s")

        client = TestClient(create_app(make_settings(engine.url.render_as_string(False)), engine))
        params = {"start": START.isoformat(), "end": end.isoformat(), "interval": "month"}
        headers = {"Authorization": f"Bearer {API_KEY}"}
        first = client.get("/v1/metrics/churn", params=params, headers=headers)
        assert first.status_code == 200 and len(first.json()["data"]) == args.months
        timings = []
        for _ in range(args.requests):
            t0 = time.perf_counter()
            response = client.get("/v1/metrics/churn", params=params, headers=headers)
            timings.append((time.perf_counter() - t0) * 1000)
            assert response.status_code == 200
        q = statistics.quantiles(timings, n=100)
        print(f"/v1/metrics/churn, {args.months} monthly intervals, {args.requests} requests: "
              f"p50 {statistics.median(timings):.1f} ms, p95 {q[94]:.1f} ms")  # fmt: skip
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
