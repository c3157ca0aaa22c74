"""Prometheus instruments and the request-timing middleware.

Each app gets its own registry so that several apps in one process (tests, benchmarks)
never clash and every test sees only its own counts.
"""

from __future__ import annotations

import logging
import logging.config
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


@dataclass
class Telemetry:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.webhook_events = Counter(
            "churn_ledger_webhook_events",
            "Signed Stripe events received, by event type and outcome (stored|duplicate).",
            ["type", "outcome"],
            registry=r,
        )
        self.webhook_rejections = Counter(
            "churn_ledger_webhook_rejections",
            "Webhook requests rejected before storage, by reason.",
            ["reason"],
            registry=r,
        )
        self.request_latency = Histogram(
            "churn_ledger_http_request_duration_seconds",
            "HTTP request latency by route template, method and status.",
            ["method", "route", "status"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        # Set every GAUGES_INTERVAL_S by service/ops/gauges.py (and by each /readyz).
        self.unhandled_events = Gauge(
            "churn_ledger_unhandled_events",
            "Stored events not yet projected (the backlog).",
            registry=r,
        )
        self.projection_lag = Gauge(
            "churn_ledger_projection_lag_seconds",
            "Age of the oldest stored event not yet projected; 0 with no backlog.",
            registry=r,
        )
        self.metrics_freshness = Gauge(
            "churn_ledger_metrics_freshness_seconds",
            "How far behind the metric tables are: age of the oldest ledger change no"
            " refresh has counted yet; 0 when fresh.",
            registry=r,
        )
        self.metrics_refresh_duration = Gauge(
            "churn_ledger_metrics_refresh_duration_seconds",
            "Duration of the newest metrics refresh (any process).",
            registry=r,
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def labelled(self, metric: Any, *labels: str) -> Any:
        """`metric.labels(*labels)`, kept: the webhook route counts and times every
        request, and `labels()` (a lock, a lookup) cost more than the count itself."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child


# Any other method (a scanner's junk verbs) shares one label: the label set stays bounded.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class TimingMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): the receiver's hot path pays only a clock read."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            # Unmatched paths share one label so that scanners cannot blow up cardinality.
            path = getattr(route, "path", None) or "unmatched"
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.telemetry.request_latency.labels(method, path, str(status)).observe(
                time.perf_counter() - start
            )


# Datetimes to `default` (str), as json.dumps wrote them, not orjson's own ISO format.
_ORJSON = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


class JsonFormatter(logging.Formatter):
    """One JSON object per line; fields passed as `extra={"fields": {...}}`."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        # orjson: a line per webhook at INFO, ~6 µs less each than json.dumps. Datetimes
        # and other values stay str()'d, as json.dumps(default=str) wrote them.
        return orjson.dumps(entry, default=str, option=_ORJSON).decode()


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to `sys.stderr` as it is when a record is emitted, not as it was when logging
    was configured: code that swaps stderr (a CLI runner, a test capturing output) would
    otherwise leave every later record writing to a closed stream."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def logging_config(level: str) -> dict[str, Any]:
    """Every logger of the process, uvicorn's and the libraries' included, writes one JSON
    object per line to stderr (a traceback is the `exc` field of its record's line).

    Also handed to uvicorn as its `log_config`, so that each of `serve --workers N`'s
    processes applies it, and uvicorn's own lines are JSON too."""
    level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {
            "json": {
                "()": StderrHandler,
                "formatter": "json",
            }
        },
        "loggers": {
            # Their own handlers off, so every line goes through the root's, once.
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": level, "propagate": True},
            "churn_ledger": {"handlers": [], "level": level, "propagate": True},
        },
        "root": {"handlers": ["json"], "level": level},
    }


def configure_logging(level: str) -> None:
    # What no line shows is not gathered for every record (the logging HOWTO's
    # "Optimization"): the caller's frame, thread and process. ~10 µs a webhook.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    logging.config.dictConfig(logging_config(level))
