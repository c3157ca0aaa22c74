"""Rebuild throughput: `python -m bench.rebuild --customers 1000` (SQLite and PostgreSQL).

Stores a simulated account's events, then times `rebuild` (events/s) and reports the
process's peak RSS. Results go to bench/results/rebuild-*.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from tempfile import mkdtemp

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from bench.__main__ import PG_URL, RESULTS
from jobs.simulate import event_bytes, simulate
from service.db import create_db_engine, upgrade
from service.ledger.options import LedgerOptions
from service.ledger.service import rebuild
from service.webhooks.schemas import parse_event
from service.webhooks.service import store_event


def measure(url: str, events: list[dict]) -> dict[str, float]:
    engine = create_db_engine(url)
    upgrade(engine)
    with Session(engine) as session:
        for event in events:
            body = event_bytes(event)
            store_event(session, body, parse_event(body))
        session.commit()
    with Session(engine, expire_on_commit=False) as session:
        started = time.perf_counter()
        customers = rebuild(session, LedgerOptions(), batch=500)
        elapsed = time.perf_counter() - started
    engine.dispose()
    return {
        "events": len(events),
        "customers": customers,
        "seconds": round(elapsed, 2),
        "events_per_s": round(len(events) / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--months", type=int, default=12)
    args = parser.parse_args()
    events = simulate(customers=args.customers, months=args.months, seed=1).events
    results = {"sqlite": measure(f"sqlite:///{Path(mkdtemp()) / 'rebuild.db'}", events)}
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_db_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = (
            make_url(PG_URL)
            .update_query_dict({"options": f"-csearch_path={schema}"})
            .render_as_string(hide_password=False)
        )
        results["postgres"] = measure(url, events)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "rebuild": results,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"rebuild-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
