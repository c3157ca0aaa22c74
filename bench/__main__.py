"""`make bench`: ingest, rebuild, query latency and memory, projector, metrics refresh,
freshness and the pipeline as deployed (burst, lag, 1 vs 2 workers), in one run, against
targets.

Every speed figure is measured in the same run as its baseline (ratios are what to
compare: the machine is shared and noisy). Results: bench/results/bench-*.json and a
table on the terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench import ingest
from service.db import create_db_engine, upgrade

RESULTS = Path(__file__).parent / "results"
PG_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

# Issue 7's targets.
TARGETS = {
    "ingest_sqlite_vs_bare": 0.6,
    "ingest_postgres_vs_bare": 0.5,
    "ingest_p99_ms": 50,
    "rebuild_events_per_s": 50_000,
    "query_p95_ms": 50,
    "server_rss_mb": 300,
    # Issue 13's.
    "large_customer_new_event_ms": 20,
    "drain_stored_vs_empty": 1.0,  # must not fall with the store's size (noise aside)
    "catch_up_vs_burst": 2.0,
    "lag_customer_p99_ms": 1000,
    # Issue 14's.
    "refresh_one_event_ms": 200,
    "freshness_p99_s": 2.0,
}


@contextmanager
def databases() -> Iterator[Any]:
    """A factory of new migrated databases (SQLite files, PostgreSQL schemas), all
    dropped on the way out."""
    tmp = Path(tempfile.mkdtemp(prefix="churn-bench-"))
    admin = create_db_engine(PG_URL)
    schemas: list[str] = []

    def make(engine: str) -> str:
        if engine == "sqlite":
            url = f"sqlite:///{tmp / f'{uuid.uuid4().hex[:8]}.db'}"
        else:
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            schemas.append(schema)
            url = (
                make_url(PG_URL)
                .update_query_dict({"options": f"-csearch_path={schema}"})
                .render_as_string(hide_password=False)
            )
        engine_ = create_db_engine(url)
        upgrade(engine_)
        engine_.dispose()
        return url

    try:
        yield make
    finally:
        with admin.begin() as conn:
            for schema in schemas:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _row(table: Table, what: str, figure: str, baseline: str, ratio: str, ok: bool | None) -> None:
    verdict = "" if ok is None else ("[green]yes[/]" if ok else "[red]no[/]")
    table.add_row(what, figure, baseline, ratio, verdict)


def render(report: dict[str, Any]) -> Table:
    table = Table(title=f"churn-ledger bench {report['when']}")
    for col in ("measure", "figure", "baseline / target", "ratio", "meets target"):
        table.add_column(col, justify="right" if col != "measure" else "left")
    ing = report.get("ingest")
    if ing:
        servers = ing["servers"]
        bare = servers["bare"]
        client = ing.get("client", "python")
        _row(
            table,
            f"ingest bare FastAPI ({client} client)",
            f"{bare['rps']} req/s",
            "",
            "1.00",
            None,
        )
        for name, r in servers.items():
            if name == "bare":
                continue
            engine = "sqlite" if "sqlite" in name else "postgres"
            target = TARGETS[f"ingest_{engine}_vs_bare"]
            _row(
                table,
                f"ingest {name} (p50 {r['p50_ms']} / p99 {r['p99_ms']} ms, lost {r['lost']})",
                f"{r['rps']} req/s",
                f"≥ {target}× bare",
                f"{r['vs_bare']:.2f}",
                r["vs_bare"] >= target
                and r["lost"] == 0
                and r["p99_ms"] < TARGETS["ingest_p99_ms"],
            )
        for name, r in servers.items():
            _row(
                table,
                f"server peak RSS, {name}",
                f"{r['server_peak_rss_mb']} MB",
                f"< {TARGETS['server_rss_mb']} MB",
                "",
                r["server_peak_rss_mb"] < TARGETS["server_rss_mb"],
            )
    for engine, r in (report.get("rebuild") or {}).items():
        if not isinstance(r, dict) or "events_per_s" not in r:
            continue
        _row(
            table,
            f"rebuild {engine}, {r['events']:,} events",
            f"{r['events_per_s']:,} ev/s",
            f"≥ {TARGETS['rebuild_events_per_s']:,} ev/s",
            f"{r['events_per_s'] / TARGETS['rebuild_events_per_s']:.2f}",
            r["events_per_s"] >= TARGETS["rebuild_events_per_s"],
        )
        if r.get("peak_rss_mb") is not None:
            _row(
                table,
                f"rebuild {engine} peak RSS",
                f"{r['peak_rss_mb']} MB",
                f"< {TARGETS['server_rss_mb']} MB",
                "",
                r["peak_rss_mb"] < TARGETS["server_rss_mb"],
            )
    for engine, endpoints in (report.get("query") or {}).items():
        if not isinstance(endpoints, dict):
            continue
        months = report.get("query_months", "?")
        # /healthz on the same server is the baseline: the HTTP stack's own share.
        base = endpoints.get("healthz") or {}
        for endpoint, r in endpoints.items():
            if endpoint == "healthz" or not isinstance(r, dict) or "p95_ms" not in r:
                continue
            _row(
                table,
                f"query {engine} /v1/metrics/{endpoint}, {months} months (p50 {r['p50_ms']} ms)",
                f"p95 {r['p95_ms']} ms",
                f"< {TARGETS['query_p95_ms']} ms; /healthz p95 {base.get('p95_ms', '-')} ms",
                f"{r['p95_ms'] / base['p95_ms']:.1f}× healthz" if base.get("p95_ms") else "",
                r["p95_ms"] < TARGETS["query_p95_ms"],
            )
        if endpoints.get("server_peak_rss_mb") is not None:
            _row(
                table,
                f"query server {engine} peak RSS",
                f"{endpoints['server_peak_rss_mb']} MB",
                f"< {TARGETS['server_rss_mb']} MB",
                "",
                endpoints["server_peak_rss_mb"] < TARGETS["server_rss_mb"],
            )
    proj = report.get("projector") or {}
    for r in proj.get("large_customer", []):
        target = TARGETS["large_customer_new_event_ms"]
        _row(
            table,
            f"projector {r['engine']}: new event of a {r['history_events']:,}-event customer",
            f"{r['new_event_ms_incremental_median']} ms",
            f"< {target} ms; whole {r['new_event_ms_whole_median']} ms",
            f"{r['new_event_ms_whole_median'] / r['new_event_ms_incremental_median']:.0f}× faster",
            r["new_event_ms_incremental_median"] < target,
        )
    sizes = proj.get("store_size", [])
    for r in sizes:
        empty = next(
            (x for x in sizes if x["engine"] == r["engine"] and x["stored_events"] == 0), None
        )
        ratio = r["events_per_s"] / empty["events_per_s"] if empty else None
        _row(
            table,
            f"drain {r['engine']}, {r['stored_events']:,} events stored",
            f"{r['events_per_s']:,} ev/s",
            "empty store" if r["stored_events"] else "",
            f"{ratio:.2f}" if ratio is not None else "",
            None if not r["stored_events"] or ratio is None else ratio >= 0.8,
        )
    for engine, r in (report.get("refresh") or {}).items():
        target = TARGETS["refresh_one_event_ms"]
        inc = r["one_event_incremental_ms_median"]
        _row(
            table,
            f"metrics refresh {engine} after one event, {r['customers']:,} customers"
            f" (max {r['one_event_incremental_ms_max']} ms)",
            f"{inc} ms",
            f"< {target} ms; whole {r['whole_ms_median']} ms",
            f"{r['whole_vs_incremental']}× faster",
            inc < target and r["all_incremental"],
        )
    fresh = report.get("freshness") or {}
    for engine, r in (fresh.get("engines") or {}).items():
        target = TARGETS["freshness_p99_s"]
        _row(
            table,
            f"webhook → /v1/metrics/mrr {engine}, {r['achieved_rate']} ev/s"
            f" (p50 {r['visible_p50_s']} s, missing {r['missing']})",
            f"p99 {r['visible_p99_s']} s",
            f"< {target} s at {fresh['rate']} ev/s",
            "",
            r["missing"] == 0 and r["visible_p99_s"] is not None and r["visible_p99_s"] < target,
        )
    pipe = report.get("pipeline") or {}
    for r in pipe.get("burst", []):
        ratio = r["catch_up_vs_burst"]
        _row(
            table,
            f"burst {r['engine']} serve as deployed, {r['burst_s']:g} s at {r['rps']} req/s"
            f" (p99 {r['p99_ms']} ms, lost {r['lost']})",
            f"caught up in {r['catch_up_s']} s",
            f"≤ {TARGETS['catch_up_vs_burst']}× the burst",
            "" if ratio is None else f"{ratio}",
            ratio is not None and ratio <= TARGETS["catch_up_vs_burst"] and r["lost"] == 0,
        )
        rss = max(r["peak_rss_mb"].values(), default=0)
        _row(
            table,
            f"burst {r['engine']} peak RSS, largest process of serve",
            f"{rss} MB",
            f"< {TARGETS['server_rss_mb']} MB",
            "",
            rss < TARGETS["server_rss_mb"],
        )
    for r in pipe.get("lag", []):
        target = TARGETS["lag_customer_p99_ms"]
        _row(
            table,
            f"webhook → /v1/customers/{{id}} {r['engine']}, {r['achieved_rate']} ev/s"
            f" (p50 {r['p50_ms']} ms, never {r['never_visible_60s']})",
            f"p99 {r['p99_ms']} ms",
            f"< {target} ms",
            "",
            r["never_visible_60s"] == 0 and r["p99_ms"] < target,
        )
    w = pipe.get("workers")
    if w:
        one, two = w["runs"]
        _row(
            table,
            f"drain {w['engine']}, 2 vs 1 `worker` ({one['events']:,} events; same ledger:"
            f" {w['same_ledger']})",
            f"{two['events_per_s']} ev/s",
            f"{one['events_per_s']} ev/s with 1",
            f"{w['two_vs_one']}",
            w["same_ledger"] and (w["two_vs_one"] or 0) > 1.0,
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--only",
        choices=["ingest", "rebuild", "query", "projector", "refresh", "freshness", "pipeline"],
        action="append",
    )
    parser.add_argument("--rounds", type=int, default=3, help="ingest rounds per server")
    parser.add_argument(
        "--client",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="ingest's load client (auto: wrk where installed, as issue 13 measured)",
    )
    parser.add_argument("--seconds", type=float, default=4, help="ingest seconds per round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rebuild-customers", type=int, default=20_000)
    parser.add_argument("--query-customers", type=int, default=100_000)
    parser.add_argument("--months", type=int, default=36, help="query history, months")
    parser.add_argument(
        "--stored-events", type=int, default=100_000, help="projector store size, events"
    )
    parser.add_argument(
        "--refresh-customers", type=int, default=100_000, help="metrics refresh ledger size"
    )
    parser.add_argument("--freshness-rate", type=float, default=200, help="events/s")
    parser.add_argument("--freshness-seconds", type=float, default=15)
    parser.add_argument("--burst-seconds", type=float, default=8, help="pipeline burst")
    parser.add_argument("--lag-seconds", type=float, default=20, help="pipeline steady load")
    parser.add_argument("--worker-customers", type=int, default=2000, help="1 vs 2 workers")
    args = parser.parse_args()
    parts = args.only or [
        "ingest",
        "rebuild",
        "query",
        "projector",
        "refresh",
        "freshness",
        "pipeline",
    ]
    console = Console(width=160)
    report: dict[str, Any] = {"when": datetime.now(UTC).isoformat(timespec="seconds")}
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if "ingest" in parts:
        console.print("[bold]ingest[/]: bare vs receiver, interleaved rounds")
        t = time.perf_counter()
        with databases() as make:
            report["ingest"] = ingest.run(
                make,
                rounds=args.rounds,
                seconds=args.seconds,
                concurrency=args.concurrency,
                client=args.client,
            )
        timings["ingest"] = time.perf_counter() - t
    if "rebuild" in parts:
        from bench import rebuild

        console.print(f"[bold]rebuild[/]: {args.rebuild_customers:,} simulated customers")
        t = time.perf_counter()
        report["rebuild"] = rebuild.run(customers=args.rebuild_customers, months=12)
        timings["rebuild"] = time.perf_counter() - t
    if "query" in parts:
        from bench import metrics_latency

        console.print(f"[bold]query[/]: {args.query_customers:,} customers, {args.months} months")
        t = time.perf_counter()
        report["query"] = metrics_latency.run(customers=args.query_customers, months=args.months)
        report["query_months"] = args.months
        timings["query"] = time.perf_counter() - t
    if "projector" in parts:
        from bench import projector

        console.print("[bold]projector[/]: a 5,000-event customer, drain vs store size")
        t = time.perf_counter()
        report["projector"] = projector.run(
            ["sqlite", "postgresql"], 5000, 20, [0, args.stored_events], 150
        )
        timings["projector"] = time.perf_counter() - t
    if "refresh" in parts:
        from bench import metrics_refresh

        console.print(f"[bold]refresh[/]: one event, {args.refresh_customers:,} customers")
        t = time.perf_counter()
        report["refresh"] = metrics_refresh.run(customers=args.refresh_customers, months=36)
        timings["refresh"] = time.perf_counter() - t
    if "freshness" in parts:
        from bench import freshness

        console.print(f"[bold]freshness[/]: {args.freshness_rate:g} events/s, webhook → MRR")
        t = time.perf_counter()
        report["freshness"] = {
            "rate": args.freshness_rate,
            "engines": freshness.run(args.freshness_rate, args.freshness_seconds),
        }
        timings["freshness"] = time.perf_counter() - t
    if "pipeline" in parts:
        from bench import pipeline

        console.print("[bold]pipeline[/]: serve as deployed: burst, lag, 1 vs 2 workers")
        t = time.perf_counter()
        report["pipeline"] = pipeline.run(
            ["sqlite", "postgresql"],
            burst_s=args.burst_seconds,
            concurrency=args.concurrency,
            rate=args.freshness_rate,
            lag_s=args.lag_seconds,
            worker_customers=args.worker_customers,
        )
        timings["pipeline"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - started
    report["seconds"] = {k: round(v, 1) for k, v in timings.items()}
    report["targets"] = TARGETS
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    console.print(render(report))
    console.print(f"took {timings['total']:.0f} s; written to {path}")


if __name__ == "__main__":
    main()
