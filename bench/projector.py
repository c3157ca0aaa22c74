"""Projector benchmarks: `python -m bench.projector` (SQLite and PostgreSQL).

* `large`: a customer with `--history` events (one subscription, hourly seat changes,
  monthly invoices, from the simulator); then new events of it, each stored and projected
  alone: milliseconds per new event, incremental (as deployed) and recomputed whole (the
  path before incremental projection, in the same run).
* `store`: projector events/s draining new customers' events with 0 or `--stored` events
  already stored (and projected) in the store: must not fall with the store's size.
* `explain`: the query plans of the drain's and a customer's reads on that large store.

Results go to bench/results/projector-*.json. `run(...)` is what `make bench` calls.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from tempfile import mkdtemp
from typing import Any

from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from bench.rebuild import _rows, _schema_url
from service.db import create_db_engine, upgrade
from service.projector import service as projector
from service.settings import LedgerOptions
from service.webhooks.models import StripeEvent
from sim.simulate import DAY, AccountBuilder, simulate

PG_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).parent / "results"
OPTIONS = LedgerOptions()


def _database(engine: str) -> tuple[str, Any]:
    """A new migrated database: its URL and a function that drops it."""
    if engine == "sqlite":
        path = Path(mkdtemp(prefix="churn-bench-")) / "projector.db"
        url = f"sqlite:///{path}"
        _upgrade(url)
        return url, lambda: path.unlink(missing_ok=True)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_db_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = _schema_url(schema)
    _upgrade(url)

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return url, drop


def _upgrade(url: str) -> None:
    engine = create_db_engine(url)
    upgrade(engine)
    engine.dispose()


def _insert(engine: Engine, rows: list[dict]) -> None:
    with engine.begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(StripeEvent), rows[start : start + 5000])


def _drain(engine: Engine, now: int, limit: int = 200) -> int:
    done = 0
    with Session(engine, expire_on_commit=False) as session:
        while True:
            n = projector.project_pending(session, OPTIONS, now=now, limit=limit)
            session.commit()
            done += n
            if n == 0:
                return done


def long_history(events: int, seed: int = 3) -> list[dict]:
    """One customer's events: a subscription changed every hour, renewed monthly."""
    b = AccountBuilder(seed=seed)
    price = b.price(1500)
    customer = b.customer()
    sub = b.subscribe(customer, price, 1)
    k = 0
    while len(b._events) < events:  # the builder has no public count
        k += 1
        b.change(sub, quantity=1 + k % 9, at=b.now + 3600)
    return list(b.build(until=b.now + DAY).events)[:events]


def large(engine_name: str, history: int, new: int) -> dict:
    """ms to project one new event of a customer with `history` events."""
    url, drop = _database(engine_name)
    engine = create_db_engine(url)
    try:
        rows = _rows(long_history(history + new))
        now = max(r["created"] for r in rows) + DAY
        rows.sort(key=lambda r: r["created"])
        _insert(engine, rows[:history])
        started = time.perf_counter()
        _drain(engine, now)
        first = time.perf_counter() - started
        timings: dict[str, list[float]] = {"incremental": [], "whole": []}
        for i, row in enumerate(rows[history:]):
            mode = "incremental" if i % 2 == 0 else "whole"
            _insert(engine, [row])
            with Session(engine, expire_on_commit=False) as session:
                started = time.perf_counter()
                if mode == "incremental":
                    assert projector.project_pending(session, OPTIONS, now=now) == 1
                else:
                    _project_whole(session, row["account"], row["customer_id"], now)
                session.commit()
                timings[mode].append((time.perf_counter() - started) * 1000)
        return {
            "engine": engine_name,
            "history_events": history,
            "first_projection_s": round(first, 3),
            "new_event_ms_incremental_median": round(statistics.median(timings["incremental"]), 2),
            "new_event_ms_whole_median": round(statistics.median(timings["whole"]), 2),
            "samples": {k: [round(v, 2) for v in vs] for k, vs in timings.items()},
        }
    finally:
        engine.dispose()
        drop()


def _project_whole(session: Session, account: str, customer_id: str, now: int) -> None:
    """What every projection did before incremental projection: the whole customer."""
    from service.ledger.repository import LedgerRepository
    from service.webhooks.repository import StripeEventRepository

    StripeEventRepository(session).begin_write()
    fx = LedgerRepository(session).fx_table(OPTIONS.reporting_currency)
    projector._Batch(session, now, OPTIONS.past_due_grace_days, fx).customers(
        account, [customer_id]
    )


def store_size(engine_name: str, stored_customers: int, new_customers: int) -> dict:
    """Drain events/s of `new_customers` fresh customers with a store already holding
    `stored_customers` customers' events (projected)."""
    url, drop = _database(engine_name)
    engine = create_db_engine(url)
    try:
        old = simulate(customers=stored_customers, months=12, seed=5, account="acct_old")
        rows = _rows(old.events) if stored_customers else []
        now = int(datetime.now(UTC).timestamp())
        _insert(engine, rows)
        if rows:
            with Session(engine, expire_on_commit=False) as session:
                projector.rebuild(session, OPTIONS, now=now, batch=2000)
                with session.begin():
                    session.execute(text("DELETE FROM projection_queue"))
        stored = len(rows)
        del rows, old
        fresh = _rows(simulate(customers=new_customers, months=12, seed=6).events)
        _insert(engine, fresh)
        if engine_name == "postgresql":
            with engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        started = time.perf_counter()
        _drain(engine, now)
        seconds = time.perf_counter() - started
        explain = _explain(engine, engine_name)
        return {
            "engine": engine_name,
            "stored_events": stored,
            "drained_events": len(fresh),
            "drain_s": round(seconds, 2),
            "events_per_s": round(len(fresh) / seconds),
            "explain": explain,
        }
    finally:
        engine.dispose()
        drop()


_EXPLAIN_QUERIES = {
    "pending_customers": (
        "SELECT account, customer_id FROM projection_queue WHERE attempts < 10 AND dead_at "
        "IS NULL GROUP BY account, customer_id ORDER BY min(id) LIMIT 200"
    ),
    "customer_events": (
        "SELECT customer_id, event_id, type, created, body FROM stripe_events "
        "WHERE account = '' AND customer_id IN ('cus_x', 'cus_y') AND type IN "
        "('customer.subscription.updated', 'customer.subscription.created') "
        "ORDER BY customer_id"
    ),
    "failed_payments": (
        "SELECT customer_id, min(created) FROM stripe_events WHERE account = '' AND "
        "customer_id IN ('cus_x', 'cus_y') AND type = 'invoice.payment_failed' "
        "GROUP BY customer_id"
    ),
    "customer_changes_from": (
        "SELECT id FROM subscription_mrr_changes WHERE account = '' AND customer_id = 'cus_x' "
        "AND at >= 0 ORDER BY at, subscription_id, id"
    ),
}


def _explain(engine: Engine, engine_name: str) -> dict[str, list[str]]:
    prefix = "EXPLAIN QUERY PLAN " if engine_name == "sqlite" else "EXPLAIN "
    out = {}
    with engine.connect() as conn:
        for name, sql in _EXPLAIN_QUERIES.items():
            rows = conn.execute(text(prefix + sql)).all()
            out[name] = [str(r[-1]) for r in rows]
    return out


def run(engines: list[str], history: int, new: int, stored: list[int], fresh: int) -> dict:
    results: dict[str, Any] = {"large_customer": [], "store_size": []}
    for name in engines:
        results["large_customer"].append(large(name, history, new))
        for customers in stored:
            results["store_size"].append(store_size(name, customers, fresh))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--history", type=int, default=5000)
    parser.add_argument("--new", type=int, default=10)
    parser.add_argument(
        "--stored", default="0,7000", help="customers already stored (~14.6 events each)"
    )
    parser.add_argument("--fresh", type=int, default=150, help="new customers drained")
    parser.add_argument("--only", choices=["large", "store"], default=None)
    args = parser.parse_args()
    engines = args.engines.split(",")
    stored = [int(x) for x in args.stored.split(",")]
    if args.only == "large":
        results = {"large_customer": [large(e, args.history, args.new) for e in engines]}
    elif args.only == "store":
        results = {"store_size": [store_size(e, s, args.fresh) for e in engines for s in stored]}
    else:
        results = run(engines, args.history, args.new, stored, args.fresh)
    results["load_average"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"projector-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
