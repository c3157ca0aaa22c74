"""The pipeline as deployed: `python -m bench.pipeline` (SQLite and PostgreSQL).

Every server here is `churn-ledger serve` with its defaults (projector in its own child
process, live metrics refresh on): what a user runs.

* `burst`: full-speed signed webhooks for `--burst-s` seconds, then the time until the
  projector has caught up (target: within 2× the burst), acknowledged vs stored (zero
  lost), and the peak RSS of every process of the server (receiver and projector child).
* `lag`: a steady `--rate` events/s of new customers; for a sample of them, the time from
  the webhook's 2xx to the customer answering in `/v1/customers/{id}` (p50/p99).
* `workers`: PostgreSQL only. A stored backlog drained by 1 and then 2 `churn-ledger
  worker` processes (receivers without projector); events/s each, and the two ledgers
  must be identical (no double counting).

Results go to bench/results/pipeline-*.json. `run(...)` is what `make bench` calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench import load
from bench.projector import _database, _insert
from bench.rebuild import _rows
from service.db import create_db_engine
from service.ledger.models import MrrMovement
from service.webhooks.models import StripeEvent
from service.webhooks.repository import StripeEventRepository
from sim.simulate import simulate
from tests.live import free_port

RESULTS = Path(__file__).parent / "results"
SECRET = "whsec_bench_pipeline"
API_KEY = "bench-read-key"
WATCH_AT_ONCE = 8
SENDERS = 16


def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        # As deployed: nothing of ours set but what a user must set.
        if not k.startswith(("PROJECTOR_", "METRICS_", "READYZ_", "GAUGES_"))
    }
    env.update(DATABASE_URL=database_url, STRIPE_WEBHOOK_SECRETS=SECRET, API_KEYS=API_KEY, **extra)
    return env


def _process_tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _peak_rss_mb(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), None)
    return round(int(line.split()[1]) / 1024, 1) if line else None


class Deployed:
    """`churn-ledger serve` with its defaults, in its own process group."""

    def __init__(self, database_url: str, *, extra_env: dict[str, str] | None = None) -> None:
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port)],
            env=_env(database_url, **(extra_env or {})),
            start_new_session=True,
            # One JSON log line per webhook at info: kept out of the report.
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.peak_rss: dict[str, float] = {}

    def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("serve did not start")

    def warm_up(self, headers: dict[str, str], timeout: float = 120) -> None:
        """One event seen through before anything is timed: for the first seconds after
        serve answers, its projector's process is still importing (a one-off at start,
        not the steady state a lag figure is about)."""
        body = _new_customer_event(0, "warm")
        answer = httpx.post(
            self.url + "/webhooks/stripe", content=body, headers=load.signed(body, SECRET)
        )
        answer.raise_for_status()
        deadline = time.monotonic() + timeout
        while httpx.get(self.url + "/v1/customers/cus_warm0", headers=headers).status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the warm-up event was never projected")
            time.sleep(0.1)

    def sample_rss(self) -> None:
        """Peak RSS so far of the server and of each of its children (the projector)."""
        for i, pid in enumerate(_process_tree(self.proc.pid)):
            name = "server" if i == 0 else f"child_{pid}"
            mb = _peak_rss_mb(pid)
            if mb is not None:
                self.peak_rss[name] = max(mb, self.peak_rss.get(name, 0.0))

    def stop(self) -> None:
        self.sample_rss()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()

    def __enter__(self) -> Deployed:
        self.wait_up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _backlog(engine: Any) -> int:
    with Session(engine) as session:
        return StripeEventRepository(session).count_unhandled()


def _stored(engine: Any) -> int:
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(StripeEvent)) or 0


def burst(engine_name: str, seconds: float, concurrency: int, timeout: float = 300) -> dict:
    url, drop = _database(engine_name)
    engine = create_db_engine(url)
    try:
        with Deployed(url) as server:
            result = asyncio.run(load.run(server.url, SECRET, concurrency, seconds, "burst_"))
            started = time.monotonic()
            drained = None
            while time.monotonic() - started < timeout:
                server.sample_rss()
                if _backlog(engine) == 0:
                    drained = time.monotonic() - started
                    break
                time.sleep(0.25)
        stored = _stored(engine)
        return {
            "engine": engine_name,
            "burst_s": seconds,
            "concurrency": concurrency,
            "rps": result["rps"],
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            "acknowledged": result["ok"],
            "statuses": result["statuses"],
            "stored": stored,
            "lost": result["ok"] - stored,
            "catch_up_s": None if drained is None else round(drained, 2),
            "catch_up_vs_burst": None if drained is None else round(drained / seconds, 2),
            "peak_rss_mb": server.peak_rss,
        }
    finally:
        engine.dispose()
        drop()


def _new_customer_event(n: int, prefix: str) -> bytes:
    sub = {
        "id": f"sub_{prefix}{n}",
        "object": "subscription",
        "customer": f"cus_{prefix}{n}",
        "status": "active",
        "currency": "usd",
        "created": int(time.time()),
        "start_date": int(time.time()),
        "items": {
            "object": "list",
            "data": [
                {
                    "id": f"si_{prefix}{n}",
                    "object": "subscription_item",
                    "quantity": 1,
                    "current_period_start": int(time.time()),
                    "current_period_end": int(time.time()) + 30 * 86400,
                    "price": {
                        "id": "price_lag",
                        "object": "price",
                        "unit_amount": 4900,
                        "currency": "usd",
                        "recurring": {"interval": "month", "interval_count": 1},
                    },
                }
            ],
        },
    }
    return json.dumps(
        {
            "id": f"evt_{prefix}{n:09d}",
            "object": "event",
            "api_version": "2025-03-31.basil",
            "created": int(time.time()),
            "livemode": False,
            "type": "customer.subscription.created",
            "data": {"object": sub},
        }
    ).encode()


async def _steady(
    url: str, rate: float, seconds: float, sample_every: int, visible: Callable[..., Any]
) -> dict:
    """Sends `rate` events/s for `seconds`; every `sample_every`-th one is watched until
    `visible(client, n)` is true. Returns the lags and how many never showed.

    One watcher polls the oldest sampled events not yet seen (every 20 ms), a few at a
    time: the projector takes customers in arrival order, and a watcher per event would
    load the server with thousands of polls a second and measure itself. An event seen
    late because the watcher was still on earlier ones is counted late: conservative."""
    lags: list[float] = []
    send_errors = 0
    watched: deque[tuple[int, float]] = deque()
    sending_done = asyncio.Event()
    pending: asyncio.Queue[int | None] = asyncio.Queue()
    host, port = url.removeprefix("http://").split(":")
    # Webhooks over raw keep-alive streams (bench.load's client), polls over httpx: the
    # load generator must cost far less than the server, or it measures itself.
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def sender() -> None:
            nonlocal send_errors
            reader, writer = await asyncio.open_connection(host, int(port))
            try:
                while (n := await pending.get()) is not None:
                    body = _new_customer_event(n, "lag")
                    status = await load._request(reader, writer, f"{host}:{port}", body, SECRET)
                    if status != 200:
                        send_errors += 1
                    elif n % sample_every == 0:
                        watched.append((n, time.perf_counter()))
            finally:
                writer.close()

        async def watch() -> None:
            while watched or not sending_done.is_set():
                if not watched:
                    await asyncio.sleep(0.02)
                    continue
                # The oldest few at once: one at a time, a poll's own latency under load
                # (~0.2 s) would make the watcher the bottleneck.
                head = [watched[i] for i in range(min(WATCH_AT_ONCE, len(watched)))]
                seen = await asyncio.gather(*(visible(client, n) for n, _ in head))
                now = time.perf_counter()
                for (n, acked), ok in zip(head, seen, strict=True):
                    if ok:
                        lags.append(now - acked)
                        watched.remove((n, acked))
                if watched and now - watched[0][1] > 60:
                    return  # the rest count as never visible
                if not all(seen):
                    await asyncio.sleep(0.02)

        watcher = asyncio.create_task(watch())
        senders = [asyncio.create_task(sender()) for _ in range(SENDERS)]
        total = int(rate * seconds)
        began = await load.feed_paced(pending, total, rate, len(senders))
        await asyncio.gather(*senders)
        sent_in = time.perf_counter() - began
        sending_done.set()
        await watcher
    unseen = len(watched)
    lags.sort()
    q = statistics.quantiles(lags, n=100) if len(lags) > 1 else [lags[0] if lags else 0.0] * 99
    return {
        "sent": total,
        "achieved_rate": round(total / sent_in, 1),
        "send_errors": send_errors,
        "sampled": len(lags) + unseen,
        "never_visible_60s": unseen,
        "p50_ms": round(q[49] * 1000, 1),
        "p99_ms": round(q[98] * 1000, 1),
        "max_ms": round(lags[-1] * 1000, 1) if lags else None,
    }


def lag(engine_name: str, rate: float, seconds: float, sample_every: int = 10) -> dict:
    url, drop = _database(engine_name)
    try:
        with Deployed(url) as server:
            headers = {"Authorization": f"Bearer {API_KEY}"}

            async def visible(client: httpx.AsyncClient, n: int) -> bool:
                r = await client.get(f"/v1/customers/cus_lag{n}", headers=headers)
                return r.status_code == 200

            server.warm_up(headers)

            result = asyncio.run(_steady(server.url, rate, seconds, sample_every, visible))
            server.sample_rss()
        return {
            "engine": engine_name,
            "rate": rate,
            "seconds": seconds,
            **result,
            "peak_rss_mb": server.peak_rss,
        }
    finally:
        drop()


def _drain_with_workers(url: str, workers: int, expected: int, timeout: float) -> dict:
    engine = create_db_engine(url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "service.cli", "worker", "--poll", "0.2"],
            env=_env(url),
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(workers)
    ]
    try:
        started = time.monotonic()
        seconds = None
        rss: dict[str, float] = {}
        while time.monotonic() - started < timeout:
            for i, p in enumerate(procs):
                mb = _peak_rss_mb(p.pid)
                if mb is not None:
                    rss[f"worker_{i}"] = max(mb, rss.get(f"worker_{i}", 0.0))
            if _backlog(engine) == 0:
                seconds = time.monotonic() - started
                break
            time.sleep(0.1)
        with Session(engine) as session:
            movements = session.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(MrrMovement.delta), 0),
                )
            ).one()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
        engine.dispose()
    return {
        "workers": workers,
        "events": expected,
        # Includes the workers' start-up (imports, connection), as an operator sees it.
        "drain_s": None if seconds is None else round(seconds, 2),
        "events_per_s": None if not seconds else round(expected / seconds),
        "movements": movements[0],
        "movement_sum": int(movements[1]),
        "peak_rss_mb": rss,
    }


def workers(customers: int, timeout: float = 600) -> dict:
    rows = _rows(simulate(customers=customers, months=12, seed=11).events)
    runs = []
    for n in (1, 2):
        url, drop = _database("postgresql")
        engine = create_db_engine(url)
        try:
            _insert(engine, rows)
            runs.append(_drain_with_workers(url, n, len(rows), timeout))
        finally:
            engine.dispose()
            drop()
    one, two = runs
    return {
        "engine": "postgresql",
        "customers": customers,
        "runs": runs,
        "two_vs_one": (
            round(two["events_per_s"] / one["events_per_s"], 2)
            if one["events_per_s"] and two["events_per_s"]
            else None
        ),
        "same_ledger": (one["movements"], one["movement_sum"])
        == (two["movements"], two["movement_sum"]),
    }


def run(
    engines: list[str],
    *,
    burst_s: float = 8,
    concurrency: int = 16,
    rate: float = 200,
    lag_s: float = 20,
    worker_customers: int = 2000,
) -> dict:
    out: dict[str, Any] = {"burst": [], "lag": []}
    for name in engines:
        out["burst"].append(burst(name, burst_s, concurrency))
        out["lag"].append(lag(name, rate, lag_s))
    if "postgresql" in engines and worker_customers:
        out["workers"] = workers(worker_customers)
    out["load_average"] = os.getloadavg()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", default="sqlite,postgresql")
    parser.add_argument("--only", choices=["burst", "lag", "workers"], default=None)
    parser.add_argument("--burst-s", type=float, default=8)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--lag-s", type=float, default=20)
    parser.add_argument("--worker-customers", type=int, default=2000)
    args = parser.parse_args()
    engines = args.engines.split(",")
    if args.only == "burst":
        results: dict[str, Any] = {
            "burst": [burst(e, args.burst_s, args.concurrency) for e in engines]
        }
    elif args.only == "lag":
        results = {"lag": [lag(e, args.rate, args.lag_s) for e in engines]}
    elif args.only == "workers":
        results = {"workers": workers(args.worker_customers)}
    else:
        results = run(
            engines,
            burst_s=args.burst_s,
            concurrency=args.concurrency,
            rate=args.rate,
            lag_s=args.lag_s,
            worker_customers=args.worker_customers,
        )
    results["load_average"] = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"pipeline-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results, indent=2, default=str))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
