"""Logs (issue 16): every line of a real `churn-ledger serve`, uvicorn's own included, is one
JSON object; database errors carry no statement parameters (no event bodies)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime
from enum import StrEnum
from pathlib import Path

import httpx

from service.db import create_db_engine, upgrade
from service.kit.telemetry import JsonFormatter
from tests.conftest import API_KEY
from tests.live import free_port
from tests.signing import WEBHOOK_SECRET

CLI = str(Path(sys.executable).parent / "churn-ledger")


class Outcome(StrEnum):
    stored = "stored"


def json_lines(text: str) -> list[dict[str, object]]:
    lines = [line for line in text.splitlines() if line.strip()]
    # Every line parses on its own: no plain text, no traceback spread over lines.
    return [json.loads(line) for line in lines]


class TestJsonLogs:
    def test_serve_writes_only_json_lines(self, tmp_path: Path):
        url = f"sqlite:///{tmp_path}/logs.db"
        upgrade(create_db_engine(url))
        port = free_port()
        env = dict(
            os.environ,
            DATABASE_URL=url,
            API_KEYS=API_KEY,
            STRIPE_WEBHOOK_SECRETS=WEBHOOK_SECRET,
            LOG_LEVEL="INFO",
            PROJECTOR_ENABLED="false",
        )
        proc = subprocess.Popen(
            [CLI, "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < deadline, proc.stderr
                    time.sleep(0.1)
            base = f"http://127.0.0.1:{port}"
            httpx.post(f"{base}/webhooks/stripe", content=b"{}", headers={"Stripe-Signature": "x"})
            httpx.request("BREW", f"{base}/healthz")
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=30)
        records = json_lines(err)
        loggers = {r["logger"] for r in records}
        assert "uvicorn.error" in loggers  # "Started server process", "Uvicorn running on"
        assert any(r.get("reason") == "malformed_signature" for r in records)
        assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)

    def test_database_errors_carry_no_parameters(self, tmp_path: Path):
        # In a child process: logging is configured as `serve` does, for that process only.
        script = f"""
import logging
from sqlalchemy import text
from service.db import create_db_engine
from service.kit.telemetry import configure_logging
configure_logging("INFO")
engine = create_db_engine("sqlite:///{tmp_path}/p.db")
try:
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO nowhere VALUES (:body)"), {{"body": "SECRET_BODY_PREFIX"}})
except Exception:
    logging.getLogger("churn_ledger.webhooks").exception("event not stored")
"""
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
        )
        (record,) = json_lines(result.stderr)
        assert record["msg"] == "event not stored"
        assert "Traceback" in str(record["exc"]) and "nowhere" in str(record["exc"])
        assert "SECRET_BODY_PREFIX" not in result.stderr


class TestJsonFormatter:
    def test_a_record_is_one_line_of_its_fields(self):
        record = logging.LogRecord("churn_ledger.x", logging.INFO, "", 0, "got %s", ("it",), None)
        record.fields = {
            "at": datetime(2026, 1, 1, tzinfo=UTC),  # str()'d, as json.dumps(default=str)
            "day": date(2026, 1, 2),
            "outcome": Outcome.stored,
            "ms": 1.25,
            "account": None,
            "note": "é\nline",
        }
        line = JsonFormatter().format(record)
        assert "\n" not in line
        assert json.loads(line) == {
            "ts": round(record.created, 3),
            "level": "info",
            "logger": "churn_ledger.x",
            "msg": "got it",
            "at": "2026-01-01 00:00:00+00:00",
            "day": "2026-01-02",
            "outcome": "stored",
            "ms": 1.25,
            "account": None,
            "note": "é\nline",
        }

    def test_a_traceback_is_a_field_of_its_line(self):
        try:
            raise ValueError("boom")
        except ValueError:
            record = logging.LogRecord("x", logging.ERROR, "", 0, "failed", (), sys.exc_info())
        entry = json.loads(JsonFormatter().format(record))
        assert entry["exc"].startswith("Traceback") and "ValueError: boom" in entry["exc"]
