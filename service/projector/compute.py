"""One customer's projection as pure computation: event-store rows in, table rows out.

Incremental projection (`project_customer`, under the customer's lock) and the bulk
`rebuild` both call these functions and differ only in how they read and write, so the
two cannot disagree. No database, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple, Protocol

from service.kit.time import utc_day
from service.ledger.fx import FxTable
from service.ledger.mrr import billing_interval, plan_key, plan_name
from service.ledger.timeline import MrrPoint, Projection, project
from service.payments.alerts import episode_alerts
from service.payments.episodes import (
    Episode,
    build_episodes,
    dunning_windows,
    has_failed_payment,
)
from service.stripe_shapes.events import LEDGER_EVENTS, READ_EVENTS, RawEvent, decode_object


class EventRow(Protocol):
    """The event-store columns projection needs (a SQLAlchemy row or any look-alike)."""

    @property
    def event_id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def created(self) -> int: ...
    @property
    def body(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class CustomerResult:
    projection: Projection
    episodes: list[Episode]


def needed_rows(rows: Iterable[EventRow], now: int) -> list[EventRow]:
    """The rows whose bodies the ledger and payment projectors read.

    Invoice and charge bodies only for a customer with a failed payment: with none,
    `build_episodes` finds no episode whatever they say, and they are most events.
    """
    rows = list(rows)
    wanted = READ_EVENTS if has_failed_payment(rows, now) else LEDGER_EVENTS
    return [r for r in rows if r.type in wanted]


def decode_events(rows: Iterable[EventRow], now: int) -> list[RawEvent]:
    """The events the projectors read, each body parsed once."""
    return [
        RawEvent(r.event_id, r.type, r.created, decode_object(r.body))
        for r in needed_rows(rows, now)
    ]


def compute_customer(
    rows: Iterable[EventRow], *, now: int, past_due_grace_days: int | None
) -> CustomerResult:
    events = decode_events(rows, now)
    # Failed-payment episodes first: a cancellation inside their dunning windows is
    # involuntary churn in the ledger (design §6).
    episodes = build_episodes(events, now=now)
    projection = project(
        events,
        now=now,
        past_due_grace_days=past_due_grace_days,
        dunning=dunning_windows(episodes),
    )
    return CustomerResult(projection, episodes)


@dataclass
class CustomerRows:
    """Everything one customer's projection writes, as rows ready for INSERT."""

    states: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    movements: list[dict[str, Any]] = field(default_factory=list)
    episodes: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    first_mrr_day: date | None = None
    next_change_at: int | None = None
    # Whether incremental projection can go on from these rows (`ledger_customers`).
    incremental: bool = False


def state_rows(account: str, customer_id: str, projection: Projection) -> list[dict[str, Any]]:
    return [
        {
            "account": account,
            "subscription_id": sub_id,
            "customer_id": customer_id,
            "status": cur.snapshot.sub.status,
            "currency": cur.snapshot.sub.currency,
            "mrr": cur.mrr,
            "plan": plan_key(cur.snapshot.sub),
            "plan_name": plan_name(cur.snapshot.sub),
            "billing_interval": billing_interval(cur.snapshot.sub),
            "cancel_at_period_end": cur.snapshot.sub.cancel_at_period_end,
            "started_at": cur.snapshot.sub.start_date,
            "ended_at": cur.snapshot.sub.ended_at,
            "last_event_id": cur.snapshot.event_id,
            "metadata": dict(cur.snapshot.sub.metadata),
            "past_due_since": cur.past_due_since,
            "next_change_at": cur.next_change_at,
        }
        for sub_id, cur in projection.subscriptions.items()
    ]


def change_rows(account: str, customer_id: str, projection: Projection) -> list[dict[str, Any]]:
    return [change_row(account, customer_id, p) for p in projection.points]


def change_row(account: str, customer_id: str, p: MrrPoint) -> dict[str, Any]:
    return {
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
        "churn_reason": p.churn.reason.value if p.churn else None,
        "churn_feedback": p.churn.feedback if p.churn else None,
        "churn_comment": p.churn.comment if p.churn else None,
    }


def warning_rows(account: str, customer_id: str, projection: Projection) -> list[dict[str, Any]]:
    return [
        {
            "account": account,
            "customer_id": customer_id,
            "kind": w.kind,
            "subject": w.subject,
            "message": w.message,
        }
        for w in projection.warnings
    ]


def movement_rows(
    account: str, customer_id: str, projection: Projection, fx: FxTable
) -> list[dict[str, Any]]:
    rows = []
    for r in projection.rows:
        rate = fx.rate(r.currency, r.day)
        from_rep = fx.to_reporting(r.from_mrr, r.currency, r.day)
        to_rep = fx.to_reporting(r.to_mrr, r.currency, r.day)
        rows.append(
            {
                "account": account,
                "customer_id": customer_id,
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


def episode_rows(
    account: str, customer_id: str, episodes: Iterable[Episode]
) -> list[dict[str, Any]]:
    return [_episode_row(account, customer_id, e) for e in episodes]


def _episode_row(account: str, customer_id: str, ep: Episode) -> dict[str, Any]:
    return {
        "account": account,
        "invoice_id": ep.invoice_id,
        "customer_id": customer_id,
        "subscription_id": ep.subscription_id,
        "currency": ep.currency,
        "amount_due": ep.amount_due,
        "attempts": ep.attempts,
        "first_failure_at": ep.first_failure_at,
        "last_failure_at": ep.last_failure_at,
        "next_retry_at": ep.next_retry_at,
        "decline_code": ep.decline_code,
        "failure_message": ep.failure_message,
        "billing_reason": ep.billing_reason,
        "action_required": ep.action_required,
        "outcome": ep.outcome,
        "lost_reason": ep.lost_reason,
        "closed_at": ep.closed_at,
        "recovered_at": ep.recovered_at,
        "time_to_recover_s": ep.time_to_recover_s,
        "recovered_on_attempt": ep.recovered_on_attempt,
        "event_ids": list(ep.event_ids),
    }


def customer_rows(
    account: str, customer_id: str, result: CustomerResult, fx: FxTable
) -> CustomerRows:
    projection, episodes = result.projection, result.episodes
    return CustomerRows(
        states=state_rows(account, customer_id, projection),
        changes=change_rows(account, customer_id, projection),
        warnings=warning_rows(account, customer_id, projection),
        movements=movement_rows(account, customer_id, projection, fx),
        episodes=episode_rows(account, customer_id, episodes),
        alerts=episode_alerts(account, customer_id, episodes),
        first_mrr_day=projection.first_mrr_day,
        next_change_at=projection.next_change_at,
    )


def project_rows(
    account: str,
    customer_id: str,
    rows: Sequence[EventRow],
    *,
    now: int,
    past_due_grace_days: int | None,
    fx: FxTable,
) -> CustomerRows:
    """From one customer's event-store rows to every row its projection writes."""
    result = compute_customer(rows, now=now, past_due_grace_days=past_due_grace_days)
    return customer_rows(account, customer_id, result, fx)


@dataclass
class BulkRows:
    """Rows of many customers, accumulated for one bulk write."""

    states: list[dict[str, Any]] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    movements: list[dict[str, Any]] = field(default_factory=list)
    episodes: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    customers: list[dict[str, Any]] = field(default_factory=list)

    def add(self, account: str, customer_id: str, rows: CustomerRows, at: datetime) -> None:
        self.states += rows.states
        self.changes += rows.changes
        self.warnings += rows.warnings
        self.movements += rows.movements
        self.episodes += rows.episodes
        self.alerts += rows.alerts
        self.customers.append(
            {
                "account": account,
                "customer_id": customer_id,
                "first_mrr_day": rows.first_mrr_day,
                "next_change_at": rows.next_change_at,
                "projected_at": at,
                "incremental": rows.incremental,
            }
        )


# --- computing in worker processes ------------------------------------------------------


class StoredEvent(NamedTuple):
    event_id: str
    type: str
    created: int
    body: bytes


# Set once per worker process by `init_worker`: the same for every customer of a rebuild.
_worker: dict[str, Any] = {}


def init_worker(now: int, past_due_grace_days: int | None, fx: FxTable) -> None:
    _worker.update(now=now, grace=past_due_grace_days, fx=fx)


def compute_chunk(
    account: str, customers: list[tuple[str, list[tuple[str, str, int, bytes]]]]
) -> list[tuple[str, CustomerRows]]:
    """`project_rows` for several customers, in a worker of `rebuild`'s process pool."""
    now, grace, fx = _worker["now"], _worker["grace"], _worker["fx"]
    return [
        (
            customer_id,
            project_rows(
                account,
                customer_id,
                [StoredEvent(*r) for r in rows],
                now=now,
                past_due_grace_days=grace,
                fx=fx,
            ),
        )
        for customer_id, rows in customers
    ]
