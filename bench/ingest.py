"""Ingest: signed webhooks/s at fixed concurrency, the receiver against a bare FastAPI.

The client is wrk where installed (issue 13's method: pre-signed events, bench/wrk.py),
else the bench's own Python client (bench/load.py), which costs the shared CPU more:
the results say which.

All servers stay up for the whole benchmark and are loaded in turn, round after round
(bare, receiver on SQLite, receiver on PostgreSQL, ...), so a burst of load from
something else on the machine hits every server alike; the ratio reported is the median
of the per-round ratios. Only one server is loaded at a time: idle ones cost nothing.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench import wrk
from service.db import create_db_engine
from service.webhooks.models import StripeEvent
from service.webhooks.repository import StripeEventRepository
from tests.live import free_port

SECRET = "whsec_bench_secret"
SETTLE_S = 2.0


@dataclass
class Server:
    name: str
    database_url: str | None = None
    projector: bool = False
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    rounds: list[dict] = field(default_factory=list)
    drains: list[float] = field(default_factory=list)

    def start(self) -> None:
        port = free_port()
        env = dict(
            os.environ,
            STRIPE_WEBHOOK_SECRETS=SECRET,
            PROJECTOR_ENABLED="true" if self.projector else "false",
        )
        if self.database_url:
            env["DATABASE_URL"] = self.database_url
        if self.projector:
            # As deployed: `churn-ledger serve` with its defaults (projector in its own
            # process, live metrics refresh), not the app under a bare uvicorn.
            env.pop("PROJECTOR_ENABLED")
            command = ["-m", "service.cli", "serve", "--port", str(port)]
            log = subprocess.DEVNULL  # a JSON line per webhook at info
        else:
            kind = "receiver" if self.database_url else "bare"
            command = ["-m", "bench.servers", kind, "--port", str(port)]
            log = None
        self.proc = subprocess.Popen([sys.executable, *command], env=env, stdout=log, stderr=log)
        self.url = f"http://127.0.0.1:{port}"

    def wait_up(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
            try:
                httpx.get(self.url + "/healthz", timeout=1)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start")

    def load(self, seconds: float, concurrency: int, prefix: str, client: str = "python") -> dict:
        if client == "wrk":
            result = wrk.run(self.url, SECRET, concurrency, seconds, prefix)
            self.rounds.append(result)
            return result
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.load",
                "--url",
                self.url,
                "--secret",
                SECRET,
                "--concurrency",
                str(concurrency),
                "--seconds",
                str(seconds),
                "--prefix",
                prefix,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        result = json.loads(out)
        self.rounds.append(result)
        return result

    def wait_drained(self, timeout: float = 120) -> None:
        assert self.database_url is not None
        engine = create_db_engine(self.database_url)
        started = time.monotonic()
        try:
            while time.monotonic() - started < timeout:
                with Session(engine) as session:
                    if not StripeEventRepository(session).count_unhandled():
                        break
                time.sleep(0.2)
        finally:
            engine.dispose()
        self.drains.append(round(time.monotonic() - started, 1))

    def stop(self) -> float:
        """Stops the server; its peak RSS in MB."""
        assert self.proc is not None
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
        self.proc.terminate()
        self.proc.wait(timeout=30)
        return round(int(line.split()[1]) / 1024, 1)


def stored_events(database_url: str) -> int:
    engine = create_db_engine(database_url)
    with Session(engine) as session:
        count = session.scalar(select(func.count()).select_from(StripeEvent)) or 0
    engine.dispose()
    return count


def run(
    make_database: Callable[[str], str],
    engines: tuple[str, ...] = ("sqlite", "postgres"),
    *,
    rounds: int = 3,
    seconds: float = 4,
    concurrency: int = 16,
    projector_too: bool = True,
    deployed_seconds: float = 8,
    client: str = "auto",
) -> dict:
    """`make_database(engine)` returns the URL of a new, migrated, empty database;
    `client` wrk, python, or auto (wrk where installed)."""
    if client == "auto":
        client = "wrk" if wrk.available() else "python"
    servers = [Server("bare")]
    servers += [Server(f"receiver_{e}", make_database(e)) for e in engines]
    if projector_too:
        # `churn-ledger serve` as deployed: its projector (a child process) and the live
        # refresh compete with the receiver for the CPU and, on SQLite, the write lock.
        servers += [
            Server(f"serve_{e} as deployed", make_database(e), projector=True) for e in engines
        ]
    try:
        for s in servers:
            s.start()
        for s in servers:
            s.wait_up()
        for r in range(rounds):
            # Every server once a round, in the opposite order the next round, so that
            # neither drift on the machine nor what a server leaves running favours one.
            for s in servers if r % 2 == 0 else servers[::-1]:
                if not s.projector:
                    s.load(seconds, concurrency, prefix=f"r{r}_", client=client)
                    continue
                # The burst of the issue (8 s at full speed), then waited for until caught
                # up: a projector still draining would load whichever server is measured
                # next. As deployed the projector lets a burst of up to PROJECTOR_DEFER_S
                # pass, so this measures a burst it defers whole; the receiver of a longer
                # one shares the machine with the projector catching up (README).
                s.load(deployed_seconds, concurrency, prefix=f"p{r}_", client=client)
                s.wait_drained()
                # ... and the live refresh and statistics that follow a drain.
                time.sleep(SETTLE_S)
    finally:
        rss = {s.name: s.stop() for s in servers if s.proc is not None}
    bare = servers[0]
    results: dict[str, dict] = {}
    for s in servers:
        ratios = [m["rps"] / b["rps"] for m, b in zip(s.rounds, bare.rounds, strict=True)]
        result = {
            "rps": round(statistics.median(r["rps"] for r in s.rounds), 1),
            "p50_ms": round(statistics.median(r["p50_ms"] for r in s.rounds), 2),
            "p99_ms": round(statistics.median(r["p99_ms"] for r in s.rounds), 2),
            "vs_bare": round(statistics.median(ratios), 3),
            "vs_bare_rounds": [round(x, 3) for x in ratios],
            "ok": sum(r["ok"] for r in s.rounds),
            "errors": sum(r["requests"] - r["ok"] for r in s.rounds),
            "server_peak_rss_mb": rss.get(s.name),
        }
        if s.projector:
            # Time the projector needed after each burst to catch up with it.
            result["projector_catch_up_s"] = s.drains
        if s.database_url:
            # Zero lost events: every acknowledged event is in the store. wrk does not
            # count the answers still in flight when it stops (up to `concurrency` a
            # round), whose events may be stored: those are `stored_unanswered`.
            result["stored"] = stored_events(s.database_url)
            result["lost"] = max(0, result["ok"] - result["stored"])
            result["stored_unanswered"] = max(0, result["stored"] - result["ok"])
        results[s.name] = result
    return {
        "client": client,
        "rounds": rounds,
        "seconds": seconds,
        "deployed_seconds": deployed_seconds,
        "concurrency": concurrency,
        "servers": results,
    }
