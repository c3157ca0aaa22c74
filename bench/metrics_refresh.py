"""Cost of the metrics refresh after one new event (issue 14: < 200 ms at 100k customers ×
36 months), incremental vs a whole recomputation, in the same run.

    .venv/bin/python -m bench.metrics_refresh --customers 100000 --months 36

Per engine: the ledger of bench.metrics_latency written straight into a fresh database,
one whole refresh (as `churn-ledger jobs run` does on a never-computed account); then
`--events` rounds of "one event": a customer's ledger gets one more row (an expansion on
the last day, as the projector would write it, with its mark), and `refresh_account`
runs and commits (incremental); and `--whole` forced whole refreshes of the same ledger
as the baseline. Every figure includes the commit.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.metrics_latency import RESULTS, START, copy, database, generate, insert_many
from service.db import create_db_engine
from service.ledger.models import MrrMovement
from service.ledger.repository import LedgerRepository
from service.metrics.refresh import refresh_account

TARGET_MS = 200


def _one_event(session: Session, customer: str, day: date) -> None:
    """What a projection of one upgrade writes: a ledger row and the customer's mark."""
    rows = session.scalars(
        select(MrrMovement).where(MrrMovement.account == "", MrrMovement.customer_id == customer)
    ).all()
    last = max(rows, key=lambda r: r.day, default=None)
    before = last.to_mrr if last is not None else 0
    after = before + 1000
    currency = last.currency if last is not None else "usd"
    if last is not None and last.day == day:  # the day's row nets the change
        last.to_mrr = last.to_mrr_reporting = after
        last.delta = last.delta_reporting = after - last.from_mrr
    else:
        session.add(
            MrrMovement(
                account="", customer_id=customer, day=day,
                movement="expansion" if before else "new", currency=currency,
                from_mrr=before, to_mrr=after, delta=1000, reporting_currency="usd",
                fx_rate="1", from_mrr_reporting=before, to_mrr_reporting=after,
                delta_reporting=1000, event_ids=["evt_bench"], subscription_ids=["sub"],
            )
        )  # fmt: skip
    LedgerRepository(session).mark_changed("", [], [customer])


def _median_ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 1)


def run(
    customers: int = 100_000,
    months: int = 36,
    engines: tuple[str, ...] = ("sqlite", "postgres"),
    events: int = 20,
    whole: int = 3,
) -> dict:
    days = (date(START.year + months // 12, 1 + months % 12, 1) - START).days
    ledger, states = generate(customers, days)
    today = START + timedelta(days=days - 1)
    rng = np.random.default_rng(11)
    picked = [f"cus_{i:07d}" for i in rng.integers(0, customers, events)]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="churn-refresh-bench-") as tmp:
        for name in engines:
            with database(name, Path(tmp)) as url:
                engine = create_db_engine(url)
                try:
                    write = copy if engine.dialect.name == "postgresql" else insert_many
                    with Session(engine) as session:
                        write(session, "mrr_movements", ledger)
                        write(session, "subscription_states", states)
                        session.commit()
                    t = time.perf_counter()
                    with Session(engine) as session:
                        refresh_account(session, "", today=today)
                        session.commit()
                    first = time.perf_counter() - t
                    incremental, kinds = [], []
                    for customer in picked:
                        with Session(engine) as session:
                            _one_event(session, customer, today)
                            session.commit()
                        t = time.perf_counter()
                        with Session(engine) as session:
                            done = refresh_account(session, "", today=today)
                            session.commit()
                        incremental.append(time.perf_counter() - t)
                        kinds.append(done.incremental)
                    wholes = []
                    for _ in range(whole):
                        t = time.perf_counter()
                        with Session(engine) as session:
                            refresh_account(session, "", today=today, force=True)
                            session.commit()
                        wholes.append(time.perf_counter() - t)
                finally:
                    engine.dispose()
            inc, full = _median_ms(incremental), _median_ms(wholes)
            results[name] = {
                "customers": customers,
                "ledger_rows": len(ledger),
                "first_refresh_s": round(first, 2),
                "one_event_incremental_ms_median": inc,
                "one_event_incremental_ms_max": round(max(incremental) * 1000, 1),
                "all_incremental": all(kinds),
                "whole_ms_median": full,
                "whole_vs_incremental": round(full / inc, 1) if inc else None,
                "events": events,
            }
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=36)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--whole", type=int, default=3)
    parser.add_argument("--engines", default="sqlite,postgres")
    args = parser.parse_args()
    results = run(args.customers, args.months, tuple(args.engines.split(",")), args.events,
                  args.whole)  # fmt: skip
    for name, r in results.items():
        print(
            f"{name}: one event → incremental refresh p50 {r['one_event_incremental_ms_median']}"
            f" ms (max {r['one_event_incremental_ms_max']}), whole {r['whole_ms_median']} ms"
            f" ({r['whole_vs_incremental']}×), target < {TARGET_MS} ms"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"metrics-refresh-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
