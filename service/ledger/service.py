"""Projection rules: from the event store to one customer's ledger, and draining.

Every projection recomputes the whole customer from its stored events (cheap: a
customer's history is small), so incremental projection and `rebuild` share one code
path and cannot disagree. Services only flush; the caller's edge commits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime

from sqlalchemy.orm import Session

from service.kit.time import now_ts, utc_day
from service.ledger.fx import FxQuote, FxTable
from service.ledger.models import MrrMovement, SubscriptionState
from service.ledger.mrr import billing_interval, plan_key
from service.ledger.options import LedgerOptions
from service.ledger.repository import LedgerRepository
from service.ledger.schemas import (
    CustomerOut,
    FxRateOut,
    FxRatesOut,
    Money,
    MovementOut,
    MrrOnDay,
    ReportingAmounts,
    SubscriptionChangeOut,
    SubscriptionDetailOut,
    SubscriptionOut,
    WarningOut,
)
from service.ledger.timeline import (
    DISCOUNT_EVENTS,
    SUBSCRIPTION_EVENTS,
    Projection,
    RawEvent,
    project,
)
from service.metrics.repository import MetricsStore
from service.payments.service import project_payments

log = logging.getLogger("churn_ledger.ledger")
LEDGER_EVENTS = SUBSCRIPTION_EVENTS | DISCOUNT_EVENTS


def _raw_events(rows: list) -> list[RawEvent]:
    events = []
    for row in rows:
        if row.type not in LEDGER_EVENTS:
            continue
        # Bodies were validated as events on receipt; data.object is a JSON object.
        obj = json.loads(row.body)["data"]["object"]
        events.append(RawEvent(row.event_id, row.type, row.created, obj))
    return events


def _movement_rows(projection: Projection, fx: FxTable) -> list[dict]:
    rows = []
    for r in projection.rows:
        rate = fx.rate(r.currency, r.day)
        from_rep = fx.to_reporting(r.from_mrr, r.currency, r.day)
        to_rep = fx.to_reporting(r.to_mrr, r.currency, r.day)
        rows.append(
            {
                "day": r.day,
                "currency": r.currency,
                "movement": r.movement,
                "from_mrr": r.from_mrr,
                "to_mrr": r.to_mrr,
                "delta": r.delta,
                "reporting_currency": fx.reporting,
                "fx_rate": None if rate is None else str(rate),
                "from_mrr_reporting": from_rep,
                "to_mrr_reporting": to_rep,
                "delta_reporting": None
                if from_rep is None or to_rep is None
                else to_rep - from_rep,
                "event_ids": list(r.event_ids),
                "subscription_ids": list(r.subscription_ids),
                "churn_reason": r.churn.reason if r.churn else None,
                "churn_feedback": r.churn.feedback if r.churn else None,
                "churn_comment": r.churn.comment if r.churn else None,
            }
        )
    return rows


def project_customer(
    session: Session,
    account: str,
    customer_id: str,
    options: LedgerOptions,
    *,
    now: int | None = None,
    fx: FxTable | None = None,
) -> Projection:
    repo = LedgerRepository(session)
    customer = repo.lock_customer(account, customer_id)
    rows = list(repo.customer_events(account, customer_id))
    now = now_ts() if now is None else now
    fx = fx or repo.fx_table(options.reporting_currency)
    # Failed-payment episodes first: a cancellation inside their dunning windows is
    # involuntary churn in the ledger (design §6); same lock, same transaction.
    dunning = project_payments(session, account, customer_id, rows, now)
    projection = project(
        _raw_events(rows),
        now=now,
        past_due_grace_days=options.past_due_grace_days,
        dunning=dunning,
    )

    states = [
        {
            "account": account,
            "subscription_id": sub_id,
            "customer_id": customer_id,
            "status": cur.snapshot.sub.status,
            "currency": cur.snapshot.sub.currency,
            "mrr": cur.mrr,
            "plan": plan_key(cur.snapshot.sub),
            "billing_interval": billing_interval(cur.snapshot.sub),
            "cancel_at_period_end": cur.snapshot.sub.cancel_at_period_end,
            "started_at": cur.snapshot.sub.start_date,
            "ended_at": cur.snapshot.sub.ended_at,
            "last_event_id": cur.snapshot.event_id,
            "metadata": dict(cur.snapshot.sub.metadata),
        }
        for sub_id, cur in projection.subscriptions.items()
    ]
    changes = [
        {
            "account": account,
            "subscription_id": p.subscription_id,
            "customer_id": customer_id,
            "at": p.at,
            "day": utc_day(p.at),
            "mrr": p.mrr,
            "currency": p.currency,
            "status": p.status,
            "cause": p.cause,
            "event_id": p.event_id,
        }
        for p in projection.points
    ]
    warnings = [
        {
            "account": account,
            "customer_id": customer_id,
            "kind": w.kind,
            "subject": w.subject,
            "message": w.message,
        }
        for w in projection.warnings
    ]
    repo.replace_customer_rows(account, customer_id, states, changes, warnings)
    touched = repo.sync_movements(account, customer_id, _movement_rows(projection, fx))
    # The metrics jobs recompute only what changed; marked in this same transaction.
    MetricsStore(session).mark_dirty(account, sorted(touched))
    customer.first_mrr_day = projection.first_mrr_day
    customer.next_change_at = projection.next_change_at
    handled_at = datetime.now(UTC)
    customer.projected_at = handled_at
    repo.mark_handled([r.id for r in rows], handled_at)
    session.flush()
    return projection


def project_pending(
    session: Session,
    options: LedgerOptions,
    *,
    limit: int = 200,
    now: int | None = None,
) -> int:
    """Project customers with unhandled events (or a scheduled change that is due).

    Each customer runs in a savepoint: one that fails is recorded on its events
    (attempts, last_error) and retried later, without holding back the others.
    Returns how many customers were projected.
    """
    repo = LedgerRepository(session)
    now = now_ts() if now is None else now
    repo.mark_customerless_handled(datetime.now(UTC))
    customers = repo.pending_customers(limit, options.max_attempts)
    customers += [c for c in repo.due_customers(now, limit) if c not in customers]
    fx = repo.fx_table(options.reporting_currency)
    done = 0
    for account, customer_id in sorted(customers):  # one lock order: no deadlocks
        try:
            with session.begin_nested():
                project_customer(session, account, customer_id, options, now=now, fx=fx)
            done += 1
        except Exception as exc:  # a bad event must not stop the others
            log.exception("projection failed", extra={"fields": {"customer": customer_id}})
            with session.begin_nested():
                repo.record_failure(account, customer_id, f"{type(exc).__name__}: {exc}")
    return done


def rebuild(
    session: Session,
    options: LedgerOptions,
    *,
    account: str | None = None,
    batch: int = 200,
    progress: Callable[[int, int], None] | None = None,
    now: int | None = None,
) -> int:
    """Recompute every customer from the event store; returns customers projected.

    A job is its own edge: it commits after the reset and after each batch, so a long
    rebuild holds no lock for long and shows progress as it goes.
    """
    now = now_ts() if now is None else now
    repo = LedgerRepository(session)
    repo.reset_for_rebuild(account)
    repo.mark_customerless_handled(datetime.now(UTC))
    customers = repo.all_customers(account)
    fx = repo.fx_table(options.reporting_currency)
    session.commit()
    total = len(customers)
    for start in range(0, total, batch):
        for acct, customer_id in customers[start : start + batch]:
            project_customer(session, acct, customer_id, options, now=now, fx=fx)
        session.commit()
        session.expunge_all()  # keep memory flat over millions of events
        if progress:
            progress(min(start + batch, total), total)
    return total


# --- reads and FX -----------------------------------------------------------------------


def movement_out(m: MrrMovement) -> MovementOut:
    return MovementOut(
        id=m.id,
        customer_id=m.customer_id,
        day=m.day,
        movement=m.movement,
        from_mrr=Money.of(m.from_mrr, m.currency),
        to_mrr=Money.of(m.to_mrr, m.currency),
        delta=Money.of(m.delta, m.currency),
        reporting=ReportingAmounts(
            currency=m.reporting_currency,
            fx_rate=m.fx_rate,
            from_mrr=m.from_mrr_reporting,
            to_mrr=m.to_mrr_reporting,
            delta=m.delta_reporting,
        ),
        event_ids=m.event_ids,
        subscription_ids=m.subscription_ids,
        churn_reason=m.churn_reason,
        churn_feedback=m.churn_feedback,
        churn_comment=m.churn_comment,
    )


def _subscription_out(s: SubscriptionState) -> SubscriptionOut:
    return SubscriptionOut(
        subscription_id=s.subscription_id,
        customer_id=s.customer_id,
        status=s.status,
        mrr=Money.of(s.mrr, s.currency),
        plan=s.plan,
        billing_interval=s.billing_interval,
        cancel_at_period_end=s.cancel_at_period_end,
        started_at=s.started_at,
        ended_at=s.ended_at,
        last_event_id=s.last_event_id,
        metadata=s.metadata_,
    )


def customer_detail(session: Session, account: str, customer_id: str) -> CustomerOut | None:
    repo = LedgerRepository(session)
    customer = repo.customer(account, customer_id)
    if customer is None:
        return None
    movements = repo.movements(account, customer_id)
    current: dict[str, int] = {}
    for m in movements:
        current[m.currency] = m.to_mrr
    return CustomerOut(
        account=account,
        customer_id=customer_id,
        mrr=[Money.of(amount, cur) for cur, amount in sorted(current.items())],
        first_mrr_day=customer.first_mrr_day,
        subscriptions=[_subscription_out(s) for s in repo.subscriptions_of(account, customer_id)],
        history=[MrrOnDay(day=m.day, mrr=Money.of(m.to_mrr, m.currency)) for m in movements],
        movements=[movement_out(m) for m in movements],
        warnings=[
            WarningOut(kind=w.kind, subject=w.subject, message=w.message)
            for w in repo.warnings(account, customer_id)
        ],
    )


def subscription_detail(
    session: Session, account: str, subscription_id: str
) -> SubscriptionDetailOut | None:
    repo = LedgerRepository(session)
    state = repo.subscription(account, subscription_id)
    if state is None:
        return None
    return SubscriptionDetailOut(
        **_subscription_out(state).model_dump(),
        account=account,
        history=[
            SubscriptionChangeOut(
                at=datetime.fromtimestamp(c.at, UTC),
                day=c.day,
                mrr=Money.of(c.mrr, c.currency),
                status=c.status,
                cause=c.cause,
                event_id=c.event_id,
            )
            for c in repo.subscription_changes(account, subscription_id)
        ],
        event_ids=repo.subscription_event_ids(account, subscription_id),
    )


def apply_fx_rates(session: Session, options: LedgerOptions, quotes: list[FxQuote]) -> int:
    """Store rates and recompute the reporting amounts they affect (never the movements
    themselves: FX-only changes are not movements). Returns rows recomputed."""
    repo = LedgerRepository(session)
    repo.upsert_fx_rates(options.reporting_currency, quotes)
    session.flush()
    fx = repo.fx_table(options.reporting_currency)
    since = min(q.day for q in quotes)
    currencies = {q.currency for q in quotes}
    rows = repo.movements_in_currencies(options.reporting_currency, currencies, since)
    dirty: dict[str, set[date]] = {}
    for m in rows:
        rate = fx.rate(m.currency, m.day)
        frm = fx.to_reporting(m.from_mrr, m.currency, m.day)
        to = fx.to_reporting(m.to_mrr, m.currency, m.day)
        m.fx_rate = None if rate is None else str(rate)
        m.from_mrr_reporting, m.to_mrr_reporting = frm, to
        m.delta_reporting = None if frm is None or to is None else to - frm
        dirty.setdefault(m.account, set()).add(m.day)
    for acct, days in dirty.items():
        MetricsStore(session).mark_dirty(acct, sorted(days))
    session.flush()
    return len(rows)


def list_fx_rates(session: Session, options: LedgerOptions) -> FxRatesOut:
    table = LedgerRepository(session).fx_rows(options.reporting_currency)
    return FxRatesOut(
        reporting_currency=options.reporting_currency,
        rates=[FxRateOut(currency=r.currency, day=r.day, rate=r.rate) for r in table],
    )
