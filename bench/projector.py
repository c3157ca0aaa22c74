"""Projector benchmarks: `python -m bench.projector` (SQLite and PostgreSQL).

* `large`: a customer with `--history` events (one subscription, hourly seat changes,
  monthly invoices, from the simulator); then new events of it, each stored and projected
  alone: milliseconds per new event, incremental (as deployed) and recomputed whole (the
  path before incremental projection, in the same run).
* `store`: projector events/s draining `--fresh` new customers' events with `--sizes`
  events already stored (and projected by `rebuild`): must not fall with the store's
  size (`vs_empty`). The stored part is one simulated block of customers and relabelled
  copies of it (new ids, same Stripe bodies), in the fresh customers' account.
  `python -m bench.projector --only store --sizes 0,100000,1000000` is issue 13's run.
* with it, the query plans (EXPLAIN) of every statement the drain ran, at the largest
  size; `scans` lists those that read a table whole instead of seeking.

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

from sqlalchemy import Engine, event, insert, text
from sqlalchemy.orm import Session

from bench.rebuild import _first_customers, _rows, _schema_url, relabelled
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


# New events projected before the samples, incrementally: psycopg prepares a statement
# on its fifth run on a connection, so the first samples measured parsing and planning
# every statement (17-20 ms a new event on PostgreSQL against 11-13 ms from the sixth
# on, 2026-12-04), which a running projector does once.
WARMUP = 6


def large(engine_name: str, history: int, new: int) -> dict:
    """ms to project one new event of a customer with `history` events (after WARMUP
    new events, also timed and reported apart)."""
    url, drop = _database(engine_name)
    engine = create_db_engine(url)
    try:
        rows = _rows(long_history(history + WARMUP + new))
        now = max(r["created"] for r in rows) + DAY
        rows.sort(key=lambda r: r["created"])
        _insert(engine, rows[:history])
        started = time.perf_counter()
        _drain(engine, now)
        first = time.perf_counter() - started
        timings: dict[str, list[float]] = {"warmup": [], "incremental": [], "whole": []}
        for i, row in enumerate(rows[history:]):
            alternate = "incremental" if (i - WARMUP) % 2 == 0 else "whole"
            mode = "warmup" if i < WARMUP else alternate
            _insert(engine, [row])
            with Session(engine, expire_on_commit=False) as session:
                started = time.perf_counter()
                if mode != "whole":
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


STORED_BLOCK = 5000  # simulated customers; larger stores are relabelled copies of them


def _store_rows(engine: Engine, events: int) -> int:
    """Store about `events` events of simulated customers of the default account (the
    fresh customers' too: every per-account read then meets the whole store): one
    simulated block, then relabelled copies of it (new ids, same Stripe bodies), inserted
    copy by copy. Returns how many were stored."""
    if events <= 0:
        return 0
    block = _rows(simulate(customers=STORED_BLOCK, months=12, seed=5).events)
    stored, copy = 0, 0
    while stored < events:
        rows = relabelled(block, f"s{copy}x")
        if stored + len(rows) > events:
            per_customer = len(block) / STORED_BLOCK
            rows = relabelled(
                _first_customers(block, max(1, round((events - stored) / per_customer))),
                f"s{copy}x",
            )
        _insert(engine, rows)
        stored += len(rows)
        copy += 1
    return stored


def store_size(engine_name: str, stored_events: int, new_customers: int) -> dict:
    """Drain events/s of `new_customers` fresh customers with a store already holding
    about `stored_events` events (projected by `rebuild`, queue emptied), and the query
    plans of every statement the drain ran."""
    url, drop = _database(engine_name)
    engine = create_db_engine(url)
    try:
        now = int(datetime.now(UTC).timestamp())
        started = time.perf_counter()
        stored = _store_rows(engine, stored_events)
        setup: dict[str, Any] = {"store_s": round(time.perf_counter() - started, 1)}
        if stored:
            with Session(engine, expire_on_commit=False) as session:
                started = time.perf_counter()
                projector.rebuild(session, OPTIONS, now=now, batch=2000)
                seconds = time.perf_counter() - started
                setup["rebuild_s"] = round(seconds, 1)
                setup["rebuild_events_per_s"] = round(stored / seconds)
                with session.begin():
                    session.execute(text("DELETE FROM projection_queue"))
        fresh = _rows(simulate(customers=new_customers, months=12, seed=6).events)
        _insert(engine, fresh)
        _analyze(engine, engine_name)
        statements: dict[str, Any] = {}

        def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if isinstance(params, list):  # executemany: the first row's
                params = params[0] if params else None
            statements.setdefault(statement, params)

        event.listen(engine, "before_cursor_execute", capture)
        started = time.perf_counter()
        _drain(engine, now)
        seconds = time.perf_counter() - started
        event.remove(engine, "before_cursor_execute", capture)
        explain = _explain(engine, engine_name, statements, fresh)
        return {
            "engine": engine_name,
            "stored_events": stored,
            "drained_events": len(fresh),
            "drain_s": round(seconds, 2),
            "events_per_s": round(len(fresh) / seconds),
            "setup": setup,
            "scans": {k: v for k, v in explain.items() if _scans(v, engine_name)},
            "explain": explain,
        }
    finally:
        engine.dispose()
        drop()


def _analyze(engine: Engine, engine_name: str) -> None:
    """PostgreSQL: the store as autovacuum would leave it (statistics, and the queue's
    rows the setup deleted gone; this cluster runs with autovacuum off), only this
    schema's tables, as a bare VACUUM would visit every schema. SQLite as deployed: the
    service never runs ANALYZE there."""
    if engine_name != "postgresql":
        return
    with engine.connect() as conn:
        tables = conn.scalars(
            text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        ).all()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in tables:
            conn.execute(text(f'VACUUM ANALYZE "{table}"'))


def _explain(
    engine: Engine, engine_name: str, statements: dict[str, Any], fresh: list[dict]
) -> dict[str, list[str]]:
    """Plans of the captured statements (reads, updates, deletes, upserts), and on
    PostgreSQL of the event stream the drain reads through a raw named cursor."""
    prefix = "EXPLAIN QUERY PLAN " if engine_name == "sqlite" else "EXPLAIN "
    out: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for sql, params in statements.items():
            verb = sql.lstrip().split(None, 1)[0].upper()
            if verb not in ("SELECT", "UPDATE", "DELETE", "INSERT", "WITH"):
                continue
            if verb == "INSERT" and "SELECT" not in sql.upper() and "CONFLICT" not in sql:
                continue  # a plain insert: no plan to read
            key = " ".join(sql.split())[:300]
            try:
                rows = conn.exec_driver_sql(prefix + sql, params or ()).all()
            except Exception as exc:  # an EXPLAIN the driver refuses is reported, not fatal
                out[key] = [f"(not explained: {type(exc).__name__})"]
                conn.rollback()
                continue
            out[key] = [str(r[-1]) for r in rows]
        if engine_name == "postgresql":
            from service.stripe_shapes.events import LEDGER_EVENTS, PAYMENT_EVENTS
            from service.webhooks.repository import _PG_EVENTS_OF_LIST, PG_PLAN_WHOLE_CURSORS

            customers = sorted({r["customer_id"] for r in fresh if r["customer_id"]})[:200]
            params = {
                "account": "",
                "customers": customers,
                "types": sorted(LEDGER_EVENTS),
                "flagged_types": sorted(PAYMENT_EVENTS),
                "flagged": customers[:5],
            }
            raw = conn.connection.driver_connection
            with raw.cursor() as cursor:
                # As the drain plans it: a cursor (planned for its first rows unless told
                # otherwise), not the bare query.
                cursor.execute(PG_PLAN_WHOLE_CURSORS)
                cursor.execute("EXPLAIN DECLARE explained CURSOR FOR " + _PG_EVENTS_OF_LIST, params)
                out["events_of (named cursor)"] = [r[0] for r in cursor.fetchall()]
            conn.rollback()
    return out


def _scans(plan: list[str], engine_name: str) -> bool:
    """Whether a plan reads a table or index whole rather than seeking into it."""
    if engine_name == "sqlite":
        return any(line.startswith("SCAN ") and "CONSTANT ROW" not in line for line in plan)
    return any("Seq Scan" in line for line in plan)


def run(engines: list[str], history: int, new: int, stored: list[int], fresh: int) -> dict:
    """`stored`: store sizes in events (the 1M one only when asked: it takes minutes)."""
    results: dict[str, Any] = {"large_customer": [], "store_size": []}
    for name in engines:
        results["large_customer"].append(large(name, history, new))
        for events in stored:
            results["store_size"].append(store_size(name, events, fresh))
    return results


def _with_ratios(sizes: list[dict]) -> list[dict]:
    """Each size's events/s as a ratio of the empty store's (same engine); the plans
    kept for the largest size of each engine only."""
    largest = {
        r["engine"]: max(x["stored_events"] for x in sizes if x["engine"] == r["engine"])
        for r in sizes
    }
    for r in sizes:
        empty = next(
            (x for x in sizes if x["engine"] == r["engine"] and not x["stored_events"]), None
        )
        if empty:
            r["vs_empty"] = round(r["events_per_s"] / empty["events_per_s"], 2)
        if r["stored_events"] != largest[r["engine"]]:
            r.pop("explain", None)
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--history", type=int, default=5000)
    parser.add_argument("--new", type=int, default=20)
    parser.add_argument(
        "--sizes", default="0,100000", help="events already stored, e.g. 0,100000,1000000"
    )
    parser.add_argument("--fresh", type=int, default=150, help="new customers drained")
    parser.add_argument("--only", choices=["large", "store"], default=None)
    args = parser.parse_args()
    engines = args.engines.split(",")
    stored = [int(x) for x in args.sizes.split(",")]
    if args.only == "large":
        results = {"large_customer": [large(e, args.history, args.new) for e in engines]}
    elif args.only == "store":
        results = {"store_size": [store_size(e, s, args.fresh) for e in engines for s in stored]}
    else:
        results = run(engines, args.history, args.new, stored, args.fresh)
    results["store_size"] = _with_ratios(results.get("store_size", []))
    results["load_average"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"projector-{stamp}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
