"""Delivering the alert outbox after commit: signed POSTs, exponential backoff, leases.

Runs off every request path and outside every projection transaction, in its own thread
(`AlertSender`, started from the app lifespan) or called directly (`deliver_due`, for tests
and one-shot jobs). No HTTP call ever happens while a database transaction is open.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy.orm import Session, sessionmaker

from service.kit.signing import sign
from service.payments.alerts import (
    ID_HEADER,
    SIGNATURE_HEADER,
    AlertConfig,
    alert_body,
    alert_id,
    check_mrr_at_risk,
)
from service.payments.models import PaymentAlert
from service.payments.repository import AlertRepository
from service.settings import Settings

log = logging.getLogger("churn_ledger.alerts")
RETENTION = timedelta(days=30)  # delivered and expired rows are kept this long


@dataclass
class DeliveryReport:
    delivered: int = 0
    retrying: int = 0
    failed: int = 0
    expired: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def attempted(self) -> int:
        return self.delivered + self.retrying + self.failed


def _post(client: httpx.Client, config: AlertConfig, ident: str, body: bytes) -> str | None:
    """None on a 2xx; otherwise why not (every other answer is retried)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "churn-ledger-alerts/1",
        ID_HEADER: ident,
        SIGNATURE_HEADER: sign(body, config.secret, int(time.time())),
    }
    try:
        response = client.post(config.url, content=body, headers=headers, timeout=config.timeout_s)
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return None
    return f"HTTP {response.status_code}"


def claim_settled(
    session: Session, config: AlertConfig, now_ms: int, limit: int
) -> list[PaymentAlert]:
    """The due alerts written at least `settle_s` ago that the episodes still show (the
    others are retracted unsent), leased to this sender. Flushes only."""
    repo = AlertRepository(session)
    # Wall-clock time, as `created_at` is (`now_ms` may be a test's or a job's clock).
    settled_before = datetime.now(UTC) - timedelta(seconds=config.settle_s)
    claimed = repo.claim_due(now_ms, limit, int(config.lease_s * 1000), settled_before)
    return repo.retract_unsettled(claimed)


def deliver_due(
    factory: sessionmaker[Session],
    config: AlertConfig,
    client: httpx.Client,
    *,
    now_ms: int | None = None,
    limit: int = 50,
) -> DeliveryReport:
    """One pass: expire stale alerts, claim the due ones, send each, record each result."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    report = DeliveryReport()
    with factory() as session:
        repo = AlertRepository(session)
        report.expired = repo.expire_stale(now_ms // 1000 - config.max_age_s)
        claimed = [
            (a.id, alert_id(a.account, a.dedup_key), alert_body(a), a.attempts)
            for a in claim_settled(session, config, now_ms, limit)
        ]
        session.commit()
    for row_id, ident, body, attempts in claimed:
        error = _post(client, config, ident, body)
        with factory() as session:
            repo = AlertRepository(session)
            if error is None:
                repo.delivered(row_id, datetime.now(UTC))
                report.delivered += 1
            elif attempts >= config.max_attempts:
                repo.retry_later(row_id, error, None)
                report.failed += 1
                log.error("alert %s given up after %d attempts: %s", ident, attempts, error)
            else:
                repo.retry_later(row_id, error, now_ms + config.backoff_ms(attempts))
                report.retrying += 1
                log.warning("alert %s attempt %d failed: %s", ident, attempts, error)
            session.commit()
        if error is not None:
            report.errors.append(error)
    return report


class AlertSender:
    """A daemon thread: check the MRR-at-risk threshold now and then, deliver what is due."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        config: AlertConfig,
        *,
        poll_s: float = 1.0,
        risk_every_s: float = 30.0,
        client: httpx.Client | None = None,
    ) -> None:
        self._factory = factory
        self._config = config
        self._poll_s = poll_s
        self._risk_every_s = risk_every_s
        self._client = client or httpx.Client()
        self._owns_client = client is None
        self._next_risk_check = 0.0
        self._next_prune = 0.0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(
        cls, factory: sessionmaker[Session], settings: Settings
    ) -> AlertSender | None:
        """The app's sender; None when ALERT_WEBHOOK_URL is not set (nothing to send to)."""
        config = AlertConfig.from_settings(settings)
        return None if config is None else cls(factory, config)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alert-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._owns_client:
            self._client.close()

    def wake(self) -> None:
        self._wake.set()

    def run_once(self) -> DeliveryReport:
        clock = time.monotonic()
        if clock >= self._next_risk_check:
            self._next_risk_check = clock + self._risk_every_s
            with self._factory() as session:
                check_mrr_at_risk(session, self._config)
                session.commit()
        if clock >= self._next_prune:
            self._next_prune = clock + 3600
            with self._factory() as session:
                AlertRepository(session).prune(datetime.now(UTC) - RETENTION)
                session.commit()
        total = DeliveryReport()
        while not self._stop.is_set():
            report = deliver_due(self._factory, self._config, self._client)
            for name in ("delivered", "retrying", "failed", "expired"):
                setattr(total, name, getattr(total, name) + getattr(report, name))
            if report.attempted == 0:
                break
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                # The database or the receiver may be away: alerts stay in the outbox.
                log.exception("alert pass failed")
            self._wake.wait(self._poll_s)
            self._wake.clear()


class OutboxJanitor:
    """With no ALERT_WEBHOOK_URL nothing is ever sent, yet projections still write alerts:
    a thread that expires what is past ALERT_MAX_AGE_HOURS and deletes expired rows, so
    the outbox stays bounded (what a sender would do, without sending)."""

    def __init__(
        self, factory: sessionmaker[Session], max_age_s: int, *, every_s: float = 3600.0
    ) -> None:
        self._factory = factory
        self._max_age_s = max_age_s
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, factory: sessionmaker[Session], settings: Settings) -> OutboxJanitor:
        return cls(factory, settings.alert_max_age_hours * 3600)

    def run_once(self, now: datetime | None = None) -> int:
        """Expire, then delete every expired or delivered row; how many were deleted."""
        now = now or datetime.now(UTC)
        with self._factory() as session:
            repo = AlertRepository(session)
            repo.expire_stale(int(now.timestamp()) - self._max_age_s)
            # Nobody reads an unsent outbox's history: no RETENTION here.
            deleted = repo.prune(now + timedelta(seconds=1))
            session.commit()
        return deleted

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="alert-janitor", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("alert janitor pass failed")  # the database may be away
            self._stop.wait(self._every_s)
