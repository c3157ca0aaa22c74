"""All SQL of failed payments: episodes, the reads behind the metrics, and the alert outbox."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from service.kit.sql import chunks, insert_for
from service.ledger.models import ChurnReason, Movement, MrrMovement, SubscriptionMrrChange
from service.payments.models import (
    AlertStatus,
    Outcome,
    PaymentAlert,
    PaymentEpisode,
    PaymentRiskState,
)


class PaymentRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- reads ------------------------------------------------------------------------

    def page(
        self,
        account: str,
        *,
        outcome: Outcome | None,
        customer_id: str | None,
        start_ts: int | None,
        end_ts: int | None,
        after: tuple[int, str] | None,
        limit: int,
    ) -> Sequence[PaymentEpisode]:
        """Newest first, by (first failure, invoice id): a keyset that re-projection
        (which may replace rows) never shifts."""
        query = select(PaymentEpisode).where(PaymentEpisode.account == account)
        if outcome is not None:
            query = query.where(PaymentEpisode.outcome == outcome)
        if customer_id is not None:
            query = query.where(PaymentEpisode.customer_id == customer_id)
        if start_ts is not None:
            query = query.where(PaymentEpisode.first_failure_at >= start_ts)
        if end_ts is not None:
            query = query.where(PaymentEpisode.first_failure_at < end_ts)
        if after is not None:
            at, invoice_id = after
            query = query.where(
                or_(
                    PaymentEpisode.first_failure_at < at,
                    and_(
                        PaymentEpisode.first_failure_at == at,
                        PaymentEpisode.invoice_id < invoice_id,
                    ),
                )
            )
        order = (PaymentEpisode.first_failure_at.desc(), PaymentEpisode.invoice_id.desc())
        return self.session.scalars(query.order_by(*order).limit(limit)).all()

    def get(self, account: str, invoice_id: str) -> PaymentEpisode | None:
        return self.session.scalars(
            select(PaymentEpisode).where(
                PaymentEpisode.account == account, PaymentEpisode.invoice_id == invoice_id
            )
        ).one_or_none()

    def started_between(self, account: str, start_ts: int, end_ts: int) -> Sequence[PaymentEpisode]:
        return self.session.scalars(
            select(PaymentEpisode).where(
                PaymentEpisode.account == account,
                PaymentEpisode.first_failure_at >= start_ts,
                PaymentEpisode.first_failure_at < end_ts,
            )
        ).all()

    def subscriptions_at_risk(self, account: str, at: int) -> list[str]:
        """Subscriptions with an episode open just before `at`."""
        return sorted(
            self.session.scalars(
                select(PaymentEpisode.subscription_id)
                .where(
                    PaymentEpisode.account == account,
                    PaymentEpisode.subscription_id.is_not(None),
                    PaymentEpisode.first_failure_at < at,
                    or_(PaymentEpisode.closed_at.is_(None), PaymentEpisode.closed_at >= at),
                )
                .distinct()
            )
        )

    def mrr_before(
        self, account: str, subscription_ids: Sequence[str], at: int
    ) -> dict[str, tuple[int, str]]:
        """Each subscription's (MRR, currency) just before `at`, from the ledger."""
        found: dict[str, tuple[int, str]] = {}
        for chunk in chunks(subscription_ids):
            rows = self.session.execute(
                select(
                    SubscriptionMrrChange.subscription_id,
                    SubscriptionMrrChange.mrr,
                    SubscriptionMrrChange.currency,
                )
                .where(
                    SubscriptionMrrChange.account == account,
                    SubscriptionMrrChange.subscription_id.in_(chunk),
                    SubscriptionMrrChange.at < at,
                )
                .order_by(SubscriptionMrrChange.at, SubscriptionMrrChange.id)
            )
            for sub_id, mrr, currency in rows:
                found[sub_id] = (mrr, currency)  # ascending: the last one wins
        return found

    def churned_mrr(
        self, account: str, reporting: str, start: date, end: date
    ) -> dict[ChurnReason, int]:
        rows = self.session.execute(
            select(MrrMovement.churn_reason, func.sum(MrrMovement.delta_reporting))
            .where(
                MrrMovement.account == account,
                MrrMovement.movement == Movement.churn,
                MrrMovement.reporting_currency == reporting,
                MrrMovement.delta_reporting.is_not(None),
                MrrMovement.day >= start,
                MrrMovement.day < end,
            )
            .group_by(MrrMovement.churn_reason)
        )
        return {reason: int(total or 0) for reason, total in rows if reason is not None}

    def risk_accounts(self) -> list[str]:
        """Accounts whose MRR at risk may be above 0, or was last time."""
        open_ = select(PaymentEpisode.account).where(PaymentEpisode.outcome == Outcome.open)
        known = select(PaymentRiskState.account)
        return sorted(
            set(self.session.scalars(open_.distinct())) | set(self.session.scalars(known))
        )

    def lock_risk_state(self, account: str) -> PaymentRiskState:
        self.session.execute(
            insert_for(self.session, PaymentRiskState)
            .values(account=account, above=False, mrr_at_risk=0, crossings=0)
            .on_conflict_do_nothing(index_elements=["account"])
        )
        return self.session.scalars(
            select(PaymentRiskState)
            .where(PaymentRiskState.account == account)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()


class AlertRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def enqueue_alerts(self, rows: list[dict[str, Any]]) -> None:
        """Add alerts to the outbox; a transition already alerted is left alone."""
        for row in rows:
            self.session.execute(
                insert_for(self.session, PaymentAlert)
                .values(**row)
                .on_conflict_do_nothing(index_elements=["account", "dedup_key"])
            )

    def expire_stale(self, occurred_before: int) -> int:
        """Never-tried alerts about old transitions are history, not news."""
        result = self.session.execute(
            update(PaymentAlert)
            .where(
                PaymentAlert.status == AlertStatus.pending,
                PaymentAlert.attempts == 0,
                PaymentAlert.occurred_at < occurred_before,
            )
            .values(status=AlertStatus.expired)
        )
        return result.rowcount or 0

    def claim_due(
        self, now_ms: int, limit: int, lease_ms: int, settled_before: datetime | None = None
    ) -> list[PaymentAlert]:
        """Due alerts, leased: another sender skips them until the lease runs out (and
        retries them then, if this one died mid-send: at-least-once delivery). Only those
        enqueued before `settled_before`: events delivered out of order within that while
        are all projected before anything is sent about them."""
        settled = [] if settled_before is None else [PaymentAlert.created_at < settled_before]
        alerts = list(
            self.session.scalars(
                select(PaymentAlert)
                .where(
                    PaymentAlert.status == AlertStatus.pending,
                    PaymentAlert.next_attempt_ms <= now_ms,
                    *settled,
                )
                .order_by(PaymentAlert.next_attempt_ms, PaymentAlert.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        )
        for alert in alerts:
            alert.attempts += 1
            alert.next_attempt_ms = now_ms + lease_ms
        self.session.flush()
        return alerts

    def retract_unsettled(self, alerts: list[PaymentAlert]) -> list[PaymentAlert]:
        """The alerts the episodes still show now; the others are expired unsent.

        An alert is written by the projection that saw its transition, from the events
        stored then: delivered out of order, an invoice can look lost (or recovered)
        before its later events arrive. What is sent is checked against the episode as it
        stands, so any delivery order sends what in-order delivery sends."""
        episode_alerts = [a for a in alerts if a.type.startswith("payment_episode.")]
        if not episode_alerts:
            return alerts
        outcome: dict[tuple[str, str], Outcome] = {}
        for account in {a.account for a in episode_alerts}:
            invoices = [
                a.dedup_key.partition(":")[2] for a in episode_alerts if a.account == account
            ]
            for chunk in chunks(invoices):
                for invoice_id, found in self.session.execute(
                    select(PaymentEpisode.invoice_id, PaymentEpisode.outcome).where(
                        PaymentEpisode.account == account, PaymentEpisode.invoice_id.in_(chunk)
                    )
                ):
                    outcome[(account, invoice_id)] = found
        kept: list[PaymentAlert] = []
        for alert in alerts:
            if alert.type.startswith("payment_episode."):
                now = outcome.get((alert.account, alert.dedup_key.partition(":")[2]))
                wanted = {
                    "payment_episode.opened": now is not None,
                    "payment_episode.recovered": now is Outcome.recovered,
                    "payment_episode.lost": now is Outcome.lost,
                }.get(alert.type, True)
                if not wanted:
                    alert.status = AlertStatus.expired
                    alert.last_error = f"retracted: the episode is {now.value if now else 'gone'}"
                    continue
            kept.append(alert)
        self.session.flush()
        return kept

    def delivered(self, alert_id: int, at: datetime) -> None:
        self.session.execute(
            update(PaymentAlert)
            .where(PaymentAlert.id == alert_id)
            .values(status=AlertStatus.delivered, delivered_at=at, last_error=None)
        )

    def retry_later(self, alert_id: int, error: str, next_attempt_ms: int | None) -> None:
        """Schedule the next attempt, or give up (`failed`) when there is none."""
        values: dict[str, Any] = {"last_error": error[:2000]}
        if next_attempt_ms is None:
            values["status"] = AlertStatus.failed
        else:
            values["next_attempt_ms"] = next_attempt_ms
        self.session.execute(update(PaymentAlert).where(PaymentAlert.id == alert_id).values(values))

    def next_due_ms(self) -> int | None:
        return self.session.scalar(
            select(func.min(PaymentAlert.next_attempt_ms)).where(
                PaymentAlert.status == AlertStatus.pending
            )
        )

    def prune(self, created_before: datetime) -> int:
        result = self.session.execute(
            delete(PaymentAlert).where(
                PaymentAlert.status.in_([AlertStatus.delivered, AlertStatus.expired]),
                PaymentAlert.created_at < created_before,
            )
        )
        return result.rowcount or 0
