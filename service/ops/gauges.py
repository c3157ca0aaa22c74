"""The operational gauges (backlog, projection lag, metrics freshness, refresh duration),
read from the database: the same from any process, whichever process projects and
refreshes. A thread sets them every GAUGES_INTERVAL_S, so that Prometheus sees them move
between `/readyz` calls; `/readyz` reports the same reading in its body."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.kit.telemetry import Telemetry
from service.metrics.repository import MetricsRepository
from service.webhooks.repository import StripeEventRepository

log = logging.getLogger("churn_ledger.ops")


@dataclass(frozen=True)
class Lag:
    unhandled_events: int
    projection_lag_s: float  # 0 with no backlog
    metrics_stale_s: float  # 0 when every metric table is fresh
    last_refresh_s: float | None  # None: never refreshed

    def publish(self, telemetry: Telemetry) -> None:
        telemetry.unhandled_events.set(self.unhandled_events)
        telemetry.projection_lag.set(self.projection_lag_s)
        telemetry.metrics_freshness.set(self.metrics_stale_s)
        if self.last_refresh_s is not None:
            telemetry.metrics_refresh_duration.set(self.last_refresh_s)


def read_lag(session: Session) -> Lag:
    events = StripeEventRepository(session)
    backlog = events.count_unhandled()
    oldest = events.oldest_unhandled_received() if backlog else None
    now = datetime.now(UTC)
    lag = 0.0
    if oldest is not None:
        if oldest.tzinfo is None:  # SQLite hands back naive UTC
            oldest = oldest.replace(tzinfo=UTC)
        lag = max(0.0, (now - oldest).total_seconds())
    marked, duration_ms = MetricsRepository(session).overview()
    stale = 0.0 if marked is None else max(0.0, time.time() - marked / 1000)
    return Lag(
        unhandled_events=backlog,
        projection_lag_s=round(lag, 3),
        metrics_stale_s=round(stale, 3),
        last_refresh_s=None if duration_ms is None else duration_ms / 1000,
    )


class GaugeUpdater:
    """Sets the gauges from the database every `interval_s`, in a thread."""

    def __init__(
        self, sessions: sessionmaker[Session], telemetry: Telemetry, interval_s: float = 5.0
    ) -> None:
        self._sessions = sessions
        self._telemetry = telemetry
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ops-gauges", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def update(self) -> None:
        with self._sessions() as session:
            read_lag(session).publish(self._telemetry)

    def _run(self) -> None:
        while True:
            try:
                self.update()
            except SQLAlchemyError as exc:
                # The database may be away: the gauges keep their last values.
                log.warning("gauges not updated: %s", type(exc).__name__)
            if self._stop.wait(self._interval_s):
                return
