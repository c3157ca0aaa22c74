"""Incremental projection: a customer's new events projected from its stored projection
on, at a cost of the new events and their day, not of the customer's whole history.

The stored projection is gone on from only where the result is the one a full
recomputation would give (design §1): new subscription events each ordered after their
subscription's latest snapshot, no change due, no failed payment, no discount event, no
event ahead of the clock. Anything else (a late or out-of-order event, a discount) is
recomputed whole by the batch path; the property tests hold both to `rebuild`.

Per subscription, its latest snapshot's window is cut at the first new snapshot and the
new snapshots are walked as `project` walks them; the ledger is recomputed from the first
new snapshot's day on, from where the stored rows of the day before leave it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from service.kit.time import day_start, utc_day
from service.ledger.fx import FxTable
from service.ledger.models import ChurnReason
from service.ledger.timeline import (
    Churn,
    LedgerStart,
    MrrPoint,
    Projection,
    Snapshot,
    continue_subscription,
    discounts_of,
    ledger_rows,
    new_snapshots,
    snapshot_of,
)
from service.ledger.timeline import Warning as TimelineWarning
from service.projector.compute import (
    change_row,
    movement_rows,
    state_rows,
    warning_rows,
)
from service.projector.repository import ProjectionRepository
from service.stripe_shapes.events import (
    DISCOUNT_EVENTS,
    FAILED,
    SUBSCRIPTION_EVENTS,
    RawEvent,
    decode_object,
)
from service.webhooks.repository import StripeEventRepository


class Recompute(Exception):
    """This customer's new events cannot be gone on with: project it whole."""


@dataclass
class CustomerDelta:
    """What one customer's incremental projection writes."""

    customer: dict[str, Any]
    drop_changes: list[int] = field(default_factory=list)
    changes: list[dict[str, Any]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    movements_since: date | None = None
    movements: list[dict[str, Any]] = field(default_factory=list)


def _point(row: Any) -> MrrPoint:
    churn = (
        Churn(ChurnReason(row.churn_reason), row.churn_feedback, row.churn_comment)
        if row.churn_reason is not None
        else None
    )
    return MrrPoint(
        row.at, row.subscription_id, row.mrr, row.currency, row.status, row.cause,
        row.event_id, churn,
    )  # fmt: skip


class Incremental:
    """Incremental projection of customers of one batch, in the caller's transaction."""

    def __init__(
        self,
        events: StripeEventRepository,
        repo: ProjectionRepository,
        now: int,
        grace: int | None,
        fx: FxTable,
    ) -> None:
        self.events, self.repo = events, repo
        self.now, self.grace, self.fx = now, grace, fx

    def customers(
        self, account: str, customer_ids: list[str], handled_at: datetime
    ) -> tuple[list[str], set[date]]:
        """Project those of these (locked) customers that can be gone on with; returns
        the others (for the full path) and the days whose ledger rows changed."""
        stored = self.repo.incremental_customers(account, customer_ids, self.now)
        if not stored:
            return customer_ids, set()
        queued: dict[str, list[Any]] = defaultdict(list)
        for row in self.events.queued_events(account, sorted(stored)):
            queued[row.customer_id].append(row)
        rest: list[str] = []
        touched: set[date] = set()
        done: list[int] = []
        for customer_id in customer_ids:
            if customer_id not in stored:
                rest.append(customer_id)
                continue
            rows = queued.get(customer_id, [])
            try:
                delta = self._customer(account, customer_id, stored[customer_id], rows, handled_at)
            except Recompute:
                rest.append(customer_id)
                continue
            touched |= self.repo.write_incremental(account, customer_id, delta)
            done += [r.id for r in rows]
        self.events.dequeue(done)
        return rest, touched

    def _customer(
        self,
        account: str,
        customer_id: str,
        stored: tuple[date | None, int | None],
        queued: list[Any],
        handled_at: datetime,
    ) -> CustomerDelta:
        first_mrr_day, next_change_at = stored
        by_sub: dict[str, list[RawEvent]] = defaultdict(list)
        no_id: list[str] = []
        for row in queued:
            if row.created > self.now or row.type == FAILED or row.type in DISCOUNT_EVENTS:
                raise Recompute
            if row.type not in SUBSCRIPTION_EVENTS:
                continue  # read by no projector while no payment failed
            event = RawEvent(row.event_id, row.type, row.created, decode_object(row.body))
            sub_id = snapshot_of(event).sub.id
            if sub_id is None:
                no_id.append(event.event_id)
                continue
            by_sub[sub_id].append(event)
        delta = CustomerDelta(
            customer={
                "account": account,
                "customer_id": customer_id,
                "first_mrr_day": first_mrr_day,
                "next_change_at": next_change_at,
                "projected_at": handled_at,
                "incremental": True,
            }
        )
        if no_id:
            ignored = [TimelineWarning("no_subscription_id", e, "ignored") for e in no_id]
            delta.warnings += warning_rows(account, customer_id, Projection(warnings=ignored))
        if by_sub:
            self._subscriptions(account, customer_id, first_mrr_day, by_sub, delta)
        return delta

    def _subscriptions(
        self,
        account: str,
        customer_id: str,
        first_mrr_day: date | None,
        by_sub: dict[str, list[RawEvent]],
        delta: CustomerDelta,
    ) -> None:
        states = {s.subscription_id: s for s in self.repo.states_of(account, customer_id)}
        lasts: dict[str, Snapshot] = {
            s.last_event_id: snapshot_of(
                RawEvent(s.last_event_id, s.type, s.created, decode_object(s.body))
            )
            for s in states.values()
            if s.subscription_id in by_sub and s.body is not None
        }
        # Each subscription's new snapshots, all after its latest stored one.
        plans: dict[str, tuple[Snapshot | None, list[Snapshot]]] = {}
        for sub_id, events in by_sub.items():
            state = states.get(sub_id)
            last = None
            if state is not None:
                last = lasts.get(state.last_event_id)
                if last is None or last.sub.id != sub_id:
                    raise Recompute
                events = [e for e in events if e.event_id != last.event_id]  # seen already
            if last is not None and any(snapshot_of(e).order <= last.order for e in events):
                raise Recompute  # late or out of order: it lands mid-history
            kept, dropped = new_snapshots(sub_id, last, events)
            delta.warnings += warning_rows(account, customer_id, Projection(warnings=dropped))
            if kept:
                plans[sub_id] = (last, kept)
        if not plans:
            return
        first_day = min(utc_day(kept[0].created) for _, kept in plans.values())
        since = day_start(first_day)
        later = self.repo.changes_from(account, customer_id, since)
        # The latest snapshot's own points from the first new snapshot on go: its window
        # now ends there.
        drop = {
            r.id
            for r in later
            if r.subscription_id in plans
            and r.at >= plans[r.subscription_id][1][0].created
            and r.cause != "event"
        }
        for r in later:
            if r.id in drop and r.event_id != (plans[r.subscription_id][0] or _NONE).event_id:
                raise Recompute  # not the latest snapshot's: the stored state is off
        kept_rows = [r for r in later if r.id not in drop]
        involved = {r.subscription_id for r in kept_rows} | set(plans)
        before = {
            sub_id: row
            for sub_id in sorted(involved)
            if (row := self.repo.last_change_before(account, customer_id, sub_id, since))
            is not None
        }
        # Discounts resolve only ids a snapshot lists bare: most need none read.
        discounts = (
            discounts_of(
                RawEvent(r.event_id, r.type, r.created, decode_object(r.body))
                for r in self.events.customer_events_of_types(account, customer_id, DISCOUNT_EVENTS)
            )
            if any(_lists_discount_ids(s) for _, kept in plans.values() for s in kept)
            else {}
        )
        new_points: list[MrrPoint] = []
        for sub_id, (last, kept) in sorted(plans.items()):
            mine = [r for r in kept_rows if r.subscription_id == sub_id]
            latest = mine[-1] if mine else before.get(sub_id)
            value = (latest.mrr, latest.currency) if latest is not None else (0, "")
            state = states.get(sub_id)
            projection = continue_subscription(
                sub_id,
                last,
                state.past_due_since if state is not None else None,
                value,
                kept,
                discounts,
                now=self.now,
                past_due_grace_days=self.grace,
            )
            if sub_id not in projection.subscriptions:
                raise Recompute
            new_points += projection.points
            delta.states += state_rows(account, customer_id, projection)
            delta.warnings += warning_rows(account, customer_id, projection)
        delta.drop_changes = sorted(drop)
        delta.changes = [change_row(account, customer_id, p) for p in new_points]
        # The ledger from the first new day on, from where the days before left it.
        points = [_point(r) for r in kept_rows] + new_points
        currencies = {p.currency for p in points} | {r.currency for r in before.values()}
        start = LedgerStart(
            sub_value={sub_id: _point(r) for sub_id, r in before.items()},
            totals={
                c: self.repo.total_before(account, customer_id, c, first_day)
                for c in sorted(currencies)
            },
            had_mrr=first_mrr_day is not None and first_mrr_day < first_day,
        )
        ledger = Projection(rows=ledger_rows(points, start))
        delta.movements_since = first_day
        delta.movements = movement_rows(account, customer_id, ledger, self.fx)
        if first_mrr_day is None or first_mrr_day >= first_day:
            delta.customer["first_mrr_day"] = ledger.first_mrr_day
        nexts = [
            s.next_change_at
            for sub_id, s in states.items()
            if sub_id not in plans and s.next_change_at is not None
        ] + [r["next_change_at"] for r in delta.states if r["next_change_at"] is not None]
        delta.customer["next_change_at"] = min(nexts, default=None)


def _lists_discount_ids(snap: Snapshot) -> bool:
    return bool(snap.sub.discount_ids) or any(i.discount_ids for i in snap.sub.items)


class _NoSnapshot:
    event_id = None


_NONE = _NoSnapshot()
