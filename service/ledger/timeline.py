"""From one customer's Stripe events to subscription MRR changes and ledger rows.

Pure: no database, no clock. Results depend only on the set of events (never on their
arrival order or on duplicates), which is what makes `rebuild` equal to incremental
projection (design §1, §3, §4).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from service.kit.time import DAY_S, utc_day
from service.ledger.models import ChurnReason, Movement
from service.ledger.mrr import missing_discount_ids, subscription_mrr, unpriced_items
from service.stripe_shapes import (
    DiscountSnapshot,
    SubscriptionSnapshot,
    read_discount,
    read_subscription,
)
from service.stripe_shapes.events import DISCOUNT_EVENTS, SUBSCRIPTION_EVENTS, RawEvent

TERMINAL_STATUSES = frozenset({"canceled", "incomplete_expired"})
INVOLUNTARY_CANCEL_REASONS = frozenset({"payment_failed", "payment_disputed"})
DUNNING_STATUSES = frozenset({"past_due", "unpaid"})
# [first failed payment, end of dunning] in unix s, inclusive; end None while still open.
DunningWindow = tuple[int, int | None]


@dataclass(frozen=True, slots=True)
class Snapshot:
    created: int
    terminal: bool
    event_id: str
    sub: SubscriptionSnapshot

    @property
    def order(self) -> tuple[int, bool, str]:
        # Design §2: by event.created, terminal states last, then event id.
        return (self.created, self.terminal, self.event_id)


@dataclass(frozen=True, slots=True)
class Churn:
    reason: ChurnReason
    feedback: str | None
    comment: str | None


@dataclass(frozen=True, slots=True)
class MrrPoint:
    """A subscription's MRR from `at` on (until its next point)."""

    at: int
    subscription_id: str
    mrr: int
    currency: str
    status: str
    cause: str  # event | discount_started | discount_ended | grace_ended | ended
    event_id: str
    churn: Churn | None = None


@dataclass(frozen=True, slots=True)
class LedgerRow:
    day: date
    currency: str
    from_mrr: int
    to_mrr: int
    movement: Movement
    event_ids: tuple[str, ...]
    subscription_ids: tuple[str, ...]
    churn: Churn | None = None

    @property
    def delta(self) -> int:
        return self.to_mrr - self.from_mrr


@dataclass(frozen=True, slots=True)
class SubscriptionNow:
    snapshot: Snapshot
    mrr: int
    # Where its walk stands, for incremental projection to go on from (`continue_subscription`).
    past_due_since: int | None = None
    next_change_at: int | None = None  # its next change with no new event, if known


@dataclass(frozen=True, slots=True)
class Warning:
    kind: str
    subject: str
    message: str


@dataclass
class Projection:
    points: list[MrrPoint] = field(default_factory=list)
    rows: list[LedgerRow] = field(default_factory=list)
    subscriptions: dict[str, SubscriptionNow] = field(default_factory=dict)
    warnings: list[Warning] = field(default_factory=list)
    next_change_at: int | None = None

    @property
    def first_mrr_day(self) -> date | None:
        return next((r.day for r in self.rows if r.to_mrr > 0), None)


def movement_type(from_mrr: int, to_mrr: int, had_mrr_before: bool) -> Movement:
    if from_mrr == 0:
        return Movement.reactivation if had_mrr_before else Movement.new
    if to_mrr == 0:
        return Movement.churn
    return Movement.expansion if to_mrr > from_mrr else Movement.contraction


def _discounts(events: Iterable[RawEvent]) -> dict[str, DiscountSnapshot]:
    """Latest known version of each discount; a deleted one stops counting when deleted."""
    latest: dict[str, tuple[tuple[int, bool, str], DiscountSnapshot]] = {}
    for event in events:
        discount = read_discount(event.obj)
        if discount.id is None:
            continue
        deleted = event.type == "customer.discount.deleted"
        if deleted:
            end = event.created if discount.end is None else min(discount.end, event.created)
            discount = dataclasses.replace(discount, end=end)
        key = (event.created, deleted, event.event_id)
        if discount.id not in latest or key > latest[discount.id][0]:
            latest[discount.id] = (key, discount)
    return {k: v for k, (_, v) in latest.items()}


def snapshot_of(event: RawEvent) -> Snapshot:
    """A subscription event as the timeline orders it."""
    sub = read_subscription(event.obj)
    terminal = event.type == "customer.subscription.deleted" or sub.status in TERMINAL_STATUSES
    return Snapshot(event.created, terminal, event.event_id, sub)


def _no_id(event_id: str) -> Warning:
    return Warning("no_subscription_id", event_id, "ignored")


def _after_cancellation(sub_id: str, event_id: str) -> Warning:
    return Warning(
        "event_after_cancellation", event_id, f"{sub_id} was already canceled; snapshot ignored"
    )


def _snapshots(events: Iterable[RawEvent], warnings: list[Warning]) -> dict[str, list[Snapshot]]:
    by_sub: dict[str, list[Snapshot]] = defaultdict(list)
    for event in events:
        snap = snapshot_of(event)
        if snap.sub.id is None:
            warnings.append(_no_id(event.event_id))
            continue
        by_sub[snap.sub.id].append(snap)
    ordered: dict[str, list[Snapshot]] = {}
    for sub_id, snaps in by_sub.items():
        snaps.sort(key=lambda s: s.order)
        # A canceled subscription cannot come back in Stripe; a later non-terminal
        # snapshot is inconsistent data, and must not resurrect MRR.
        end = next((i for i, s in enumerate(snaps) if s.terminal), None)
        if end is not None:
            kept = snaps[: end + 1] + [s for s in snaps[end + 1 :] if s.terminal]
            for dropped in snaps[end + 1 :]:
                if not dropped.terminal:
                    warnings.append(_after_cancellation(sub_id, dropped.event_id))
            snaps = kept
        ordered[sub_id] = snaps
    return ordered


def _time_breakpoints(
    snap: Snapshot, discounts: Mapping[str, DiscountSnapshot]
) -> list[tuple[int, str]]:
    """Instants at which this snapshot's MRR changes with no new event."""
    sub = snap.sub
    found: list[tuple[int, str]] = []
    holders = (sub, *sub.items)
    applicable = [d for h in holders for d in h.discounts]
    applicable += [discounts[i] for h in holders for i in h.discount_ids if i in discounts]
    for d in applicable:
        if d.start is not None:
            found.append((d.start, "discount_started"))
        if d.end is not None:
            found.append((d.end, "discount_ended"))
    if sub.ended_at is not None:
        found.append((sub.ended_at, "ended"))
    return found


def _in_dunning(windows: Sequence[DunningWindow], at: int) -> bool:
    return any(start <= at and (end is None or at <= end) for start, end in windows)


def _churn(snap: Snapshot, previous: Snapshot | None, cause: str, in_dunning: bool) -> Churn:
    details = snap.sub.cancellation_details
    involuntary = (
        # Ended while an invoice of it was failing (an open failed-payment episode, design
        # §6), whatever the cancellation says: the payment projector calls that episode
        # lost, and both must agree.
        in_dunning
        or details.reason in INVOLUNTARY_CANCEL_REASONS
        or snap.sub.status in ("unpaid", "incomplete_expired")
        or cause == "grace_ended"
        or (
            details.reason != "cancellation_requested"
            and previous is not None
            and previous.sub.status in DUNNING_STATUSES
        )
    )
    return Churn(
        ChurnReason.involuntary if involuntary else ChurnReason.voluntary,
        details.feedback,
        details.comment,
    )


@dataclass(slots=True)
class _Run:
    """Where one subscription's walk through its snapshots stands."""

    value: tuple[int, str] = (0, "")  # (mrr, currency) of its latest point
    past_due_since: int | None = None
    current: SubscriptionNow | None = None
    next_change_at: int | None = None


def _subscription_points(
    sub_id: str,
    snaps: list[Snapshot],
    discounts: Mapping[str, DiscountSnapshot],
    now: int,
    grace_s: int | None,
    projection: Projection,
    dunning: Sequence[DunningWindow] = (),
) -> None:
    run = _Run()
    for i, snap in enumerate(snaps):
        if snap.created > now:
            break
        window_end = snaps[i + 1].created if i + 1 < len(snaps) else None
        _snapshot_points(
            sub_id, snap, snaps[i - 1] if i else None, window_end, discounts, now, grace_s,
            dunning, run, projection,
        )  # fmt: skip
    if run.next_change_at is not None:
        nxt = projection.next_change_at
        projection.next_change_at = (
            run.next_change_at if nxt is None else min(nxt, run.next_change_at)
        )
    if run.current is not None:
        projection.subscriptions[sub_id] = dataclasses.replace(
            run.current, next_change_at=run.next_change_at
        )


def _snapshot_points(
    sub_id: str,
    snap: Snapshot,
    previous: Snapshot | None,
    window_end: int | None,
    discounts: Mapping[str, DiscountSnapshot],
    now: int,
    grace_s: int | None,
    dunning: Sequence[DunningWindow],
    run: _Run,
    projection: Projection,
) -> None:
    """The points of one snapshot over its window [created, window_end), and its
    warnings; `run` carries the subscription's walk from the snapshot before."""
    if snap.sub.status == "past_due":
        run.past_due_since = snap.created if run.past_due_since is None else run.past_due_since
    else:
        run.past_due_since = None
    past_due_since = run.past_due_since
    instants = [(snap.created, "event")]
    extra = _time_breakpoints(snap, discounts)
    if grace_s is not None and past_due_since is not None:
        extra.append((past_due_since + grace_s, "grace_ended"))
    instants += sorted(
        (t, c) for t, c in extra if t > snap.created and (window_end is None or t < window_end)
    )
    for at, cause in instants:
        if at > now:
            nxt = run.next_change_at
            run.next_change_at = at if nxt is None else min(nxt, at)
            break
        counts = grace_s is None or past_due_since is None or at < past_due_since + grace_s
        mrr = subscription_mrr(snap.sub, at, discounts, past_due_counts=counts)
        new_value = (mrr, snap.sub.currency)
        if new_value != run.value and not (mrr == 0 and run.value[0] == 0):
            churn = None
            if mrr == 0:
                churn = _churn(snap, previous, cause, _in_dunning(dunning, at))
            projection.points.append(
                MrrPoint(
                    at, sub_id, mrr, snap.sub.currency, snap.sub.status, cause, snap.event_id, churn
                )
            )
            run.value = new_value
        run.current = SubscriptionNow(snap, mrr, past_due_since)
    for missing in sorted(missing_discount_ids(snap.sub, discounts)):
        projection.warnings.append(
            Warning(
                "discount_not_seen",
                missing,
                f"{sub_id} references discount {missing} with no coupon seen yet "
                f"(event {snap.event_id}); counted without it",
            )
        )
    for item in unpriced_items(snap.sub):
        projection.warnings.append(
            Warning(
                "unpriced_item",
                item.id or sub_id,
                f"{sub_id} item {item.id} has no usable price in "
                f"{snap.sub.currency or 'its currency'} (event {snap.event_id})",
            )
        )


@dataclass
class LedgerStart:
    """The ledger walk as it stands at the start of a day: each subscription's latest
    point before it (those with points from that day on suffice), the MRR per currency,
    and whether the customer ever had MRR."""

    sub_value: dict[str, MrrPoint] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    had_mrr: bool = False


def ledger_rows(points: list[MrrPoint], start: LedgerStart | None = None) -> list[LedgerRow]:
    """The ledger rows of these points (all of a customer's, or all from one day on,
    with `start` as the walk stood at that day): points of one instant and subscription
    in the order they were made."""
    return _ledger_rows(points, start)


def _ledger_rows(points: list[MrrPoint], start: LedgerStart | None = None) -> list[LedgerRow]:
    by_day: dict[date, list[MrrPoint]] = defaultdict(list)
    for p in sorted(points, key=lambda p: (p.at, p.subscription_id)):
        by_day[utc_day(p.at)].append(p)

    start = start or LedgerStart()
    sub_value: dict[str, MrrPoint] = dict(start.sub_value)
    totals: dict[str, int] = defaultdict(int, start.totals)
    had_mrr = start.had_mrr
    rows: list[LedgerRow] = []
    for day in sorted(by_day):
        before = dict(totals)
        start_value = dict(sub_value)
        touched: dict[str, list[MrrPoint]] = defaultdict(list)
        for p in by_day[day]:
            old = sub_value.get(p.subscription_id)
            if old is not None:
                totals[old.currency] -= old.mrr
                touched[old.currency].append(p)
            totals[p.currency] += p.mrr
            touched[p.currency].append(p)
            sub_value[p.subscription_id] = p
        for currency in sorted(touched):
            frm, to = before.get(currency, 0), totals[currency]
            if frm == to:
                continue  # intraday ups and downs net out
            changed = touched[currency]
            churn = None
            if to == 0:
                # The reason of the largest subscription lost that day speaks for the day.
                lost = [
                    (start_value[p.subscription_id].mrr, p.subscription_id)
                    for p in changed
                    if p.subscription_id in start_value
                    and start_value[p.subscription_id].mrr > 0
                    and sub_value[p.subscription_id].churn is not None
                ]
                if lost:
                    churn = sub_value[max(lost)[1]].churn
                else:
                    churn = Churn(ChurnReason.voluntary, None, None)
            rows.append(
                LedgerRow(
                    day=day,
                    currency=currency,
                    from_mrr=frm,
                    to_mrr=to,
                    movement=movement_type(frm, to, had_mrr),
                    event_ids=tuple(dict.fromkeys(p.event_id for p in changed)),
                    subscription_ids=tuple(sorted({p.subscription_id for p in changed})),
                    churn=churn,
                )
            )
        had_mrr = had_mrr or any(v > 0 for v in totals.values())
    return rows


def project(
    events: Iterable[RawEvent],
    *,
    now: int,
    past_due_grace_days: int | None = None,
    dunning: Mapping[str, Sequence[DunningWindow]] | None = None,
) -> Projection:
    """Everything the ledger knows about one customer, as of unix time `now`.

    `dunning`: per subscription, the spans of its open failed-payment episodes (from the
    payment projector); a subscription ending inside one churns involuntarily.
    """
    dunning = dunning or {}
    unique = {e.event_id: e for e in events}.values()
    projection = Projection()
    discounts = _discounts(e for e in unique if e.type in DISCOUNT_EVENTS)
    snapshots = _snapshots(
        (e for e in unique if e.type in SUBSCRIPTION_EVENTS), projection.warnings
    )
    grace_s = None if past_due_grace_days is None else past_due_grace_days * DAY_S
    for sub_id in sorted(snapshots):
        _subscription_points(
            sub_id,
            snapshots[sub_id],
            discounts,
            now,
            grace_s,
            projection,
            dunning.get(sub_id, ()),
        )
    projection.rows = _ledger_rows(projection.points)
    return projection


# --- going on from a stored projection (incremental projection) ---------------------------


def new_snapshots(
    sub_id: str, last: Snapshot | None, events: Iterable[RawEvent]
) -> tuple[list[Snapshot], list[Warning]]:
    """The snapshots of new events of one subscription, all ordered after `last` (its
    latest kept snapshot, if any), that the timeline keeps, and the warnings of those it
    drops: `_snapshots` for a history that only grows at its end."""
    snaps = sorted((snapshot_of(e) for e in events), key=lambda s: s.order)
    ended = last is not None and last.terminal
    kept: list[Snapshot] = []
    warnings: list[Warning] = []
    for snap in snaps:
        if ended and not snap.terminal:
            warnings.append(_after_cancellation(sub_id, snap.event_id))
            continue
        kept.append(snap)
        ended = ended or snap.terminal
    return kept, warnings


def continue_subscription(
    sub_id: str,
    last: Snapshot | None,
    last_past_due_since: int | None,
    value: tuple[int, str],
    kept: list[Snapshot],
    discounts: Mapping[str, DiscountSnapshot],
    *,
    now: int,
    past_due_grace_days: int | None = None,
) -> Projection:
    """One subscription's points, warnings and state from its new snapshots `kept` (from
    `new_snapshots`, created up to `now`) on, as `project` makes them: `last` is its
    latest snapshot before (whose points from `kept[0].created` on, other than its event's
    own, the caller has dropped), `value` its (mrr, currency) after its remaining points.
    No payment in dunning (the caller recomputes a customer that has any)."""
    projection = Projection()
    grace_s = None if past_due_grace_days is None else past_due_grace_days * DAY_S
    run = _Run(value=value, past_due_since=last_past_due_since)
    for i, snap in enumerate(kept):
        window_end = kept[i + 1].created if i + 1 < len(kept) else None
        previous = kept[i - 1] if i else last
        _snapshot_points(
            sub_id, snap, previous, window_end, discounts, now, grace_s, (), run, projection
        )
    if run.current is not None:
        projection.subscriptions[sub_id] = dataclasses.replace(
            run.current, next_change_at=run.next_change_at
        )
    projection.next_change_at = run.next_change_at
    return projection


def discounts_of(events: Iterable[RawEvent]) -> dict[str, DiscountSnapshot]:
    """The discounts `project` resolves ids with, from a customer's discount events."""
    return _discounts(events)
