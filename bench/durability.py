"""Durability under crashes: `churn-ledger serve` as deployed is killed with SIGKILL (the
whole process group, projector child included) while signed webhooks arrive at full speed,
and, on PostgreSQL, the database is restarted under the same load.

The sender behaves as Stripe does: an event is acknowledged only by a 2xx, and anything
else (connection refused or reset, 5xx, 503) is retried until it is acknowledged; some
acknowledged events are sent again (Stripe delivers at least once). At the end:

* lost: acknowledged events that are not stored (must be 0);
* duplicates: events stored more than once (must be 0; the unique key forbids it);
* ledger_matches_rebuild: the ledger as projected through the crashes equals a `rebuild`
  of the same store (no double counting, nothing half-written).

Run: `python -m bench.durability [--seconds 6] [--pg-restart-cluster 15/crash]`; the
database restart needs a PostgreSQL cluster of its own (pg_ctlcluster), never the one
other work is using. Writes JSON to bench/results/durability-<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from bench.load import event, signed
from service.db import create_db_engine
from tests.live import free_port

SECRET = "whsec_durability"
RESULTS = Path(__file__).parent / "results"
CLI = [sys.executable, "-m", "service.cli"]


def durable_event(n: int) -> bytes:
    """bench.load's event, an hour apart each: a customer's events fall on different days,
    so its ledger has several movements to double-count if anything did."""
    envelope = json.loads(event(n, "dur"))
    envelope["created"] = 1735689600 + n * 3600
    return json.dumps(envelope).encode()


@dataclass
class Ledger:
    stored: int
    distinct: int
    movements: list[tuple[Any, ...]]


@dataclass
class Sender:
    url: str
    ids: list[int]
    acked: set[int] = field(default_factory=set)
    refused: int = 0
    resent_acked: int = 0

    async def run(self, until: float, concurrency: int = 16) -> None:
        """Send every id until acknowledged (or `until`), with a duplicate of every 10th
        acknowledged one."""
        queue: asyncio.Queue[int] = asyncio.Queue()
        for n in self.ids:
            queue.put_nowait(n)
        async with httpx.AsyncClient(timeout=5) as client:

            async def worker() -> None:
                while time.monotonic() < until:
                    try:
                        n = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    body = durable_event(n)
                    try:
                        response = await client.post(
                            f"{self.url}/webhooks/stripe",
                            content=body,
                            headers=signed(body, SECRET),
                        )
                        ok = 200 <= response.status_code < 300
                    except httpx.HTTPError:
                        ok = False
                    if ok:
                        if n in self.acked:
                            self.resent_acked += 1
                        else:
                            self.acked.add(n)
                            if n % 10 == 0:
                                queue.put_nowait(n)  # at-least-once: deliver it again
                    else:
                        self.refused += 1
                        await asyncio.sleep(0.05)  # Stripe backs off; so do we, briefly
                        queue.put_nowait(n)

            await asyncio.gather(*(worker() for _ in range(concurrency)))


class Serve:
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        return dict(
            os.environ,
            DATABASE_URL=self.database_url,
            STRIPE_WEBHOOK_SECRETS=SECRET,
            LOG_LEVEL="WARNING",
        )

    def start(self) -> None:
        # Its own session: SIGKILL to the group takes the projector child down too, as a
        # crashed container or host would.
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--port", str(self.port)],
            env=self.env(),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("serve did not come up")

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)

    def cli(self, *args: str) -> None:
        subprocess.run([*CLI, *args], env=self.env(), check=True, capture_output=True)


def read_ledger(database_url: str) -> Ledger:
    engine = create_db_engine(database_url)
    with engine.connect() as conn:
        stored = conn.scalar(text("SELECT count(*) FROM stripe_events")) or 0
        distinct = conn.scalar(text("SELECT count(DISTINCT event_id) FROM stripe_events")) or 0
        rows = conn.execute(
            text(
                "SELECT account, customer_id, currency, day, from_mrr, to_mrr, delta, movement,"
                " delta_reporting, event_ids"
                " FROM mrr_movements ORDER BY account, customer_id, currency, day"
            )
        ).all()
    engine.dispose()
    return Ledger(stored, distinct, [tuple(str(v) for v in row) for row in rows])


def wait_drained(database_url: str, timeout: float = 300) -> float:
    engine = create_db_engine(database_url)
    started = time.monotonic()
    try:
        while time.monotonic() - started < timeout:
            with engine.connect() as conn:
                if not conn.scalar(
                    text("SELECT count(*) FROM projection_queue WHERE dead_at IS NULL")
                ):
                    break
            time.sleep(0.2)
    finally:
        engine.dispose()
    return time.monotonic() - started


def stored_ids(database_url: str) -> set[int]:
    engine = create_db_engine(database_url)
    with engine.connect() as conn:
        ids = conn.scalars(text("SELECT event_id FROM stripe_events")).all()
    engine.dispose()
    return {int(i.rsplit("_", 1)[1].removeprefix("dur")) for i in ids}


def scenario(
    name: str, database_url: str, events: int, seconds: float, disrupt: str, cluster: str | None
) -> dict[str, Any]:
    serve = Serve(database_url)
    serve.cli("migrate")
    serve.start()
    sender = Sender(serve.url, list(range(events)))
    started = time.monotonic()
    disruptions: list[dict[str, float]] = []

    async def drive() -> None:
        task = asyncio.create_task(sender.run(until=started + seconds + 120))
        await asyncio.sleep(seconds / 3)
        for _ in range(2):
            at = time.monotonic() - started
            acked_before = len(sender.acked)
            if disrupt == "kill9":
                await asyncio.to_thread(serve.kill9)
                await asyncio.sleep(0.5)
                await asyncio.to_thread(serve.start)
            else:
                assert cluster is not None
                version, cluster_name = cluster.split("/")
                await asyncio.to_thread(
                    subprocess.run,
                    [
                        "pg_ctlcluster",
                        "--skip-systemctl-redirect",
                        version,
                        cluster_name,
                        "restart",
                        "-m",
                        "fast",
                    ],
                    check=True,
                )
            disruptions.append(
                {
                    "at_s": round(at, 2),
                    "down_s": round(time.monotonic() - started - at, 2),
                    "acked_before": acked_before,
                }
            )
            await asyncio.sleep(seconds / 3)
        await task

    asyncio.run(drive())
    drain_s = wait_drained(database_url)
    before = read_ledger(database_url)
    stored = stored_ids(database_url)
    serve.stop()
    serve.cli("rebuild")
    after = read_ledger(database_url)
    return {
        "scenario": name,
        "disruption": disrupt,
        "events_sent": events,
        "acknowledged": len(sender.acked),
        "refused_or_failed_attempts": sender.refused,
        "redelivered_after_ack": sender.resent_acked,
        "lost": len(sender.acked - stored),
        "stored": before.stored,
        "duplicates": before.stored - before.distinct,
        "never_acknowledged": events - len(sender.acked),
        "ledger_rows": len(before.movements),
        "ledger_matches_rebuild": before.movements == after.movements,
        "drain_after_s": round(drain_s, 2),
        "disruptions": disruptions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=6000)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5433/durability"
    )
    parser.add_argument("--pg-restart-cluster", default=None, help="e.g. 15/crash (its own!)")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(
            scenario("sqlite", f"sqlite:///{tmp}/d.db", args.events, args.seconds, "kill9", None)
        )
    engine = create_db_engine(args.postgres)
    with engine.begin() as conn:  # a fresh store each run
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    results.append(scenario("postgresql", args.postgres, args.events, args.seconds, "kill9", None))
    if args.pg_restart_cluster:
        engine = create_db_engine(args.postgres)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
        results.append(
            scenario(
                "postgresql",
                args.postgres,
                args.events,
                args.seconds,
                "db_restart",
                args.pg_restart_cluster,
            )
        )
    out = {"load": os.getloadavg(), "results": results}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"durability-{time.strftime('%Y%m%dT%H%M%S')}.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    ok = all(
        r["lost"] == 0 and r["duplicates"] == 0 and r["ledger_matches_rebuild"] for r in results
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
