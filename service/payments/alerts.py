"""Failed-payment alerts: what goes into the outbox, how it is signed, the threshold check.

The projection writes alert rows in its own transaction (so an alert is never lost and
never sent for rolled-back work); `service.payments.sender` delivers them after commit.
Each transition has a dedup key, so re-projecting a customer never alerts twice.

Receivers verify `Churn-Ledger-Signature: t=<unix>,v1=<hex>` exactly like Stripe's scheme
(`service.kit.signing`): HMAC-SHA256 with the shared secret over f"{t}.{body}", and should
dedupe on the alert `id` (delivery is at-least-once).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from service.kit.money import display
from service.kit.time import now_ts
from service.ledger.repository import LedgerRepository
from service.payments.episodes import Episode
from service.payments.models import AlertStatus, Outcome, PaymentAlert
from service.payments.repository import AlertRepository, PaymentRepository
from service.payments.risk import mrr_at_risk
from service.settings import Settings

SIGNATURE_HEADER = "Churn-Ledger-Signature"
ID_HEADER = "Churn-Ledger-Alert-Id"


@dataclass(frozen=True, slots=True)
class AlertConfig:
    url: str
    secret: str
    reporting_currency: str = "usd"
    mrr_at_risk_threshold: int | None = None
    max_age_s: int = 72 * 3600
    timeout_s: float = 10.0
    backoff_base_s: float = 5.0  # then 10, 20, 40 ... capped
    backoff_cap_s: float = 3600.0
    max_attempts: int = 20  # about 11 hours of retries with the defaults
    lease_s: float = 60.0  # a claimed alert is another sender's again after this
    # Held this long after it is written before it may be sent (ALERT_SETTLE_S): the
    # events of one invoice that arrive within it are all projected first.
    settle_s: float = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> AlertConfig | None:
        if not settings.alert_webhook_url or settings.alert_webhook_secret is None:
            return None
        return cls(
            url=settings.alert_webhook_url,
            secret=settings.alert_webhook_secret.get_secret_value(),
            reporting_currency=settings.reporting_currency.lower(),
            mrr_at_risk_threshold=settings.mrr_at_risk_threshold,
            max_age_s=settings.alert_max_age_hours * 3600,
            settle_s=settings.alert_settle_s,
        )

    def backoff_ms(self, attempts: int) -> int:
        return int(min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempts - 1)) * 1000)


def alert_id(account: str, dedup_key: str) -> str:
    # Stable across retries, senders and rebuilds: receivers dedupe on it.
    return "alrt_" + hashlib.sha256(f"{account}\0{dedup_key}".encode()).hexdigest()[:24]


def alert_body(alert: PaymentAlert) -> bytes:
    """The exact bytes sent (and signed); the same on every retry."""
    envelope = {
        "id": alert_id(alert.account, alert.dedup_key),
        "object": "alert",
        "type": alert.type,
        "created": alert.occurred_at,
        "account": alert.account or None,
        "data": alert.payload,
    }
    return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()


def _money(amount: int, currency: str) -> dict[str, Any]:
    return {"amount": amount, "currency": currency, "display": display(amount, currency)}


def _episode_payload(customer_id: str, ep: Episode) -> dict[str, Any]:
    return {
        "invoice_id": ep.invoice_id,
        "customer_id": customer_id,
        "subscription_id": ep.subscription_id,
        "amount_due": _money(ep.amount_due, ep.currency),
        "attempts": ep.attempts,
        "first_failure_at": ep.first_failure_at,
        "next_retry_at": ep.next_retry_at,
        "decline_code": ep.decline_code,
        "failure_message": ep.failure_message,
        "outcome": ep.outcome.value,
        "lost_reason": ep.lost_reason.value if ep.lost_reason else None,
        "recovered_at": ep.recovered_at,
        "time_to_recover_s": ep.time_to_recover_s,
    }


def _row(account: str, key: str, type_: str, at: int, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "account": account,
        "dedup_key": key,
        "type": type_,
        "occurred_at": at,
        "payload": payload,
        "status": AlertStatus.pending,
        "attempts": 0,
        "next_attempt_ms": 0,  # due at once
        "created_at": datetime.now(UTC),
    }


def enqueue_alert(
    session: Session, account: str, dedup_key: str, type_: str, at: int, payload: dict[str, Any]
) -> None:
    """One alert of another room (e.g. `period.restated`) into the same outbox, signed and
    delivered like the payment alerts; `dedup_key` makes it once only. Flushes only."""
    AlertRepository(session).enqueue_alerts([_row(account, dedup_key, type_, at, payload)])


def episode_alerts(
    account: str, customer_id: str, episodes: Iterable[Episode]
) -> list[dict[str, Any]]:
    """Outbox rows for every transition the episodes show: opened, recovered, lost."""
    rows = []
    for ep in episodes:
        payload = _episode_payload(customer_id, ep)
        inv = ep.invoice_id
        rows.append(
            _row(account, f"opened:{inv}", "payment_episode.opened", ep.first_failure_at, payload)
        )
        if ep.outcome is Outcome.recovered and ep.recovered_at is not None:
            key, type_ = f"recovered:{inv}", "payment_episode.recovered"
            rows.append(_row(account, key, type_, ep.recovered_at, payload))
        if ep.outcome is Outcome.lost and ep.closed_at is not None:
            rows.append(_row(account, f"lost:{inv}", "payment_episode.lost", ep.closed_at, payload))
    return rows


def check_mrr_at_risk(session: Session, config: AlertConfig, *, now: int | None = None) -> int:
    """Enqueue an alert for each account whose MRR at risk crossed the threshold (above it,
    or back to or below it) since the last check; returns how many. Flushes only.

    Per-account state is row-locked, so concurrent senders alert once per crossing."""
    threshold = config.mrr_at_risk_threshold
    if threshold is None:
        return 0
    now = now_ts() if now is None else now
    repo = PaymentRepository(session)
    fx = LedgerRepository(session).fx_table(config.reporting_currency)
    enqueued = 0
    for account in repo.risk_accounts():
        state = repo.lock_risk_state(account)
        risk = mrr_at_risk(session, account, now + 1, fx)
        above = risk.amount > threshold
        if above != state.above:
            state.crossings += 1
            type_ = "mrr_at_risk.above_threshold" if above else "mrr_at_risk.below_threshold"
            payload = {
                "mrr_at_risk": _money(risk.amount, config.reporting_currency),
                "threshold": _money(threshold, config.reporting_currency),
                "subscriptions_at_risk": risk.subscriptions,
                "unconverted_subscriptions": risk.unconverted,
            }
            key = f"mrr_at_risk:{state.crossings}"
            AlertRepository(session).enqueue_alerts([_row(account, key, type_, now, payload)])
            enqueued += 1
        state.above, state.mrr_at_risk = above, risk.amount
        state.checked_at = datetime.now(UTC)
    session.flush()
    return enqueued
