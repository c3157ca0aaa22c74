"""Rebuild throughput: `python -m bench.rebuild --customers 1000` (SQLite and PostgreSQL).

Stores a simulated account's events (setup, not measured), then times `rebuild` in a
child process, so that its peak RSS is the rebuild's own and not the simulator's.
`--events N` sizes the account by events instead (about 14.6 per customer-year). Large
accounts are simulated in shards of SHARD customers, each its own Connect account, so
the simulator's memory stays bounded. Results go to bench/results/rebuild-*.json.

`run(customers, months, engines)` is what `make bench` calls.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from tempfile import mkdtemp

from sqlalchemy import Engine, insert, text
from sqlalchemy.engine import make_url

from service.db import create_db_engine, upgrade
from service.webhooks.models import EventSource, StripeEvent
from service.webhooks.schemas import parse_event
from sim.simulate import event_bytes, simulate

PG_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).parent / "results"
SHARD = 5000  # customers per simulated account
EVENTS_PER_CUSTOMER_YEAR = 14.6  # what the simulator produces (seed 1, 12 months)
BATCH = 2000  # customers per rebuild transaction


def _rows(events: list[dict]) -> list[dict]:
    received = datetime.now(UTC)
    rows = []
    for event in events:
        body = event_bytes(event)
        env = parse_event(body)
        rows.append(
            {
                "account": env.account or "",
                "event_id": env.id,
                "type": env.type,
                "api_version": env.api_version,
                "livemode": env.livemode,
                "created": env.created,
                "object_type": env.object_type,
                "object_id": env.object_id,
                "customer_id": env.customer_id,
                "source": EventSource.webhook,
                "body": body,
                "received_at": received,
            }
        )
    return rows


# Every id prefix the simulator mints per customer (prices and products stay shared).
_ID_PREFIXES = ("cus", "sub", "si", "in", "il", "evt", "pm", "di", "req", "ch", "pi")


def relabelled(rows: list[dict], tag: str, account: str | None = None) -> list[dict]:
    """A copy of these event rows as another set of customers: every customer, event,
    subscription, invoice... id gets `tag` after its prefix (in the bodies too), and
    optionally another account. Cheap (one regex pass): 1M events stored in a minute,
    where simulating and serializing them takes ten."""
    pattern = re.compile(rb'"(' + "|".join(_ID_PREFIXES).encode() + rb")_")
    replacement = rb'"\1_' + tag.encode()
    ids = [(f"{p}_", f"{p}_{tag}") for p in _ID_PREFIXES]

    def ident(value: str | None) -> str | None:
        if value is None:
            return None
        for old, new in ids:
            if value.startswith(old):
                return new + value[len(old) :]
        return value

    out = []
    for row in rows:
        body = pattern.sub(replacement, row["body"])
        copy = dict(row)
        if account is not None:
            body = body.replace(
                f'"account": "{row["account"]}"'.encode(), f'"account": "{account}"'.encode()
            )
            copy["account"] = account
        copy.update(
            body=body,
            event_id=ident(row["event_id"]),
            object_id=ident(row["object_id"]),
            customer_id=ident(row["customer_id"]),
        )
        out.append(copy)
    return out


def _first_customers(rows: list[dict], customers: int) -> list[dict]:
    """The rows of the first `customers` customers (in order of their first event)."""
    keep = list(dict.fromkeys(r["customer_id"] for r in rows if r["customer_id"]))[:customers]
    wanted = set(keep)
    return [r for r in rows if r["customer_id"] in wanted]


def _store(
    engines: dict[str, Engine], customers: int, months: int, *, relabel: bool = False
) -> int:
    """Simulate and bulk-insert the events into every engine; returns how many.
    `relabel`: shards after the first are relabelled copies of it (`relabelled`)."""
    shards = max(1, math.ceil(customers / SHARD))
    stored = 0
    first: list[dict] = []
    for shard in range(shards):
        size = min(SHARD, customers - shard * SHARD)
        account = f"acct_bench{shard:04d}" if shards > 1 else None
        if relabel and first:
            rows = relabelled(_first_customers(first, size), f"r{shard}x", account)
        else:
            sim = simulate(customers=size, months=months, seed=1 + shard, account=account)
            rows = _rows(sim.events)
            del sim
            if relabel:
                first = rows
        for engine in engines.values():
            with engine.begin() as conn:
                for start in range(0, len(rows), 5000):
                    conn.execute(insert(StripeEvent), rows[start : start + 5000])
        stored += len(rows)
        if rows is not first:
            del rows
        gc.collect()
    return stored


def _schema_url(schema: str) -> str:
    return (
        make_url(PG_URL)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )


def _child(url: str, batch: int, workers: int) -> None:
    """The measured part, alone in its process: prints customers, seconds and peak RSS."""
    from sqlalchemy.orm import Session

    from service.projector.service import rebuild
    from service.settings import LedgerOptions

    engine = create_db_engine(url)
    with Session(engine, expire_on_commit=False) as session:
        started = time.perf_counter()
        customers = rebuild(session, LedgerOptions(), batch=batch, workers=workers)
        elapsed = time.perf_counter() - started
    engine.dispose()
    print(json.dumps({"customers": customers, "seconds": elapsed, "peak_rss_mb": _peak_rss_mb()}))


def _peak_rss_mb() -> float:
    # VmHWM belongs to this process image: ru_maxrss would also count the pages the
    # child shared with the (large) parent between fork and exec.
    status = Path("/proc/self/status")
    if status.exists():
        line = next(x for x in status.read_text().splitlines() if x.startswith("VmHWM:"))
        return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _measure(url: str, events: int, batch: int, workers: int) -> dict:
    argv = [sys.executable, "-m", "bench.rebuild", "--child", url, "--batch", str(batch)]
    out = subprocess.run(
        [*argv, "--workers", str(workers)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    child = json.loads(out.strip().splitlines()[-1])
    return {
        "events": events,
        "customers": child["customers"],
        "seconds": round(child["seconds"], 2),
        "events_per_s": round(events / child["seconds"]),
        "peak_rss_mb": round(child["peak_rss_mb"], 1),
    }


def run(
    customers: int,
    months: int,
    engines: tuple[str, ...] = ("sqlite", "postgres"),
    *,
    batch: int = BATCH,
    workers: int = 1,
    relabel: bool = False,
) -> dict:
    """Per engine: {events, customers, seconds, events_per_s, peak_rss_mb} of a rebuild."""
    urls: dict[str, str] = {}
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = None
    if "sqlite" in engines:
        urls["sqlite"] = f"sqlite:///{Path(mkdtemp()) / 'rebuild.db'}"
    if "postgres" in engines:
        admin = create_db_engine(PG_URL)
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        urls["postgres"] = _schema_url(schema)
    try:
        made = {name: create_db_engine(url) for name, url in urls.items()}
        for engine in made.values():
            upgrade(engine)
        events = _store(made, customers, months, relabel=relabel)
        if "postgres" in made:
            with made["postgres"].connect() as conn:
                # The table only: a bare ANALYZE would visit every schema of the database.
                conn.execute(text("ANALYZE stripe_events"))
                conn.commit()
        for engine in made.values():
            engine.dispose()
        return {name: _measure(url, events, batch, workers) for name, url in urls.items()}
    finally:
        if admin is not None:
            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()
        if "sqlite" in urls:
            path = Path(make_url(urls["sqlite"]).database or "")
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--events", type=int, help="size by events instead of customers")
    parser.add_argument("--months", type=int, default=12)
    parser.add_argument("--engines", default="sqlite,postgres")
    parser.add_argument("--batch", type=int, default=BATCH, help="customers per transaction")
    parser.add_argument("--workers", type=int, default=1, help="rebuild's worker processes")
    parser.add_argument(
        "--relabel",
        action="store_true",
        help="shards after the first are relabelled copies of it (fast setup of 1M events)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.batch, args.workers)
        return
    customers = args.customers
    if args.events:
        per_customer = EVENTS_PER_CUSTOMER_YEAR * args.months / 12
        customers = max(1, round(args.events / per_customer))
    engines = tuple(e.strip() for e in args.engines.split(",") if e.strip())
    results = run(
        customers,
        args.months,
        engines,
        batch=args.batch,
        workers=args.workers,
        relabel=args.relabel,
    )
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "months": args.months,
        "batch": args.batch,
        "workers": args.workers,
        "relabel": args.relabel,
        "rebuild": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"rebuild-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
