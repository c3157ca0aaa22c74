"""`make bench`: ingest throughput of the receiver against a bare FastAPI baseline.

Every figure is measured in the same run as its baseline; ratios are what to compare,
since the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from service.db import create_db_engine, upgrade
from service.webhooks.models import StripeEvent
from tests.live import free_port

RESULTS = Path(__file__).parent / "results"
SECRET = "whsec_bench_secret"
PG_URL = os.environ.get("BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            httpx.post(url + "/webhooks/stripe", content=b"{}", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("server did not start")


def _peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
    return round(int(line.split()[1]) / 1024, 1)


def ingest(kind: str, database_url: str | None, seconds: float, concurrency: int) -> dict:
    port = free_port()
    env = dict(os.environ, STRIPE_WEBHOOK_SECRETS=SECRET)
    if database_url:
        env["DATABASE_URL"] = database_url
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.servers",
            kind if kind == "bare" else "receiver",
            "--port",
            str(port),
        ],
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_up(base, server)
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.load",
                "--url",
                base,
                "--secret",
                SECRET,
                "--concurrency",
                str(concurrency),
                "--seconds",
                str(seconds),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        result = json.loads(out)
        result["server_peak_rss_mb"] = _peak_rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=10)
    if database_url:
        engine = create_db_engine(database_url)
        with Session(engine) as session:
            result["stored"] = session.scalar(select(func.count()).select_from(StripeEvent))
        engine.dispose()
        # Zero lost events: every acknowledged event is in the store.
        result["lost"] = result["ok"] - result["stored"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="churn-bench-"))
    sqlite_url = f"sqlite:///{tmp / 'bench.db'}"
    upgrade(create_db_engine(sqlite_url))
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = create_db_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    pg_url = (
        make_url(PG_URL)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )
    upgrade(create_db_engine(pg_url))

    results: dict[str, dict] = {}
    try:
        results["bare"] = ingest("bare", None, args.seconds, args.concurrency)
        results["receiver_sqlite"] = ingest("receiver", sqlite_url, args.seconds, args.concurrency)
        results["receiver_postgres"] = ingest("receiver", pg_url, args.seconds, args.concurrency)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    bare = results["bare"]["rps"]
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "ingest": results,
        "ratios": {
            "sqlite_vs_bare": round(results["receiver_sqlite"]["rps"] / bare, 3),
            "postgres_vs_bare": round(results["receiver_postgres"]["rps"] / bare, 3),
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")

    table = Table(title=f"ingest, {args.concurrency} connections, {args.seconds:g}s each")
    for col in ("server", "req/s", "p50 ms", "p99 ms", "vs bare", "lost", "peak RSS MB"):
        table.add_column(col, justify="right")
    for name, r in results.items():
        table.add_row(
            name,
            str(r["rps"]),
            str(r["p50_ms"]),
            str(r["p99_ms"]),
            f"{r['rps'] / bare:.2f}",
            str(r.get("lost", "-")),
            str(r["server_peak_rss_mb"]),
        )
    Console().print(table)
    Console().print(f"written to {path}")


if __name__ == "__main__":
    main()
