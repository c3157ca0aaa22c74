"""A subscription's past as synthetic `customer.subscription.*` snapshots.

Stripe keeps events for 30 days; older history is rebuilt from what it still has: the
subscription's own dates (start, trial, cancellation request, end) and its invoices, whose
subscription lines say which price and quantity each item had over each billed period
(prorations date mid-period upgrades and downgrades to the second).

Each snapshot is the current object as it was then (status, items, discounts, period,
cancellation fields), typed `created` / `updated` / `deleted`, with `created` = the historic
instant, so the unchanged ledger projector builds the ledger from them. Snapshots only cover
time before the earliest event Stripe itself sent for the subscription: from there on, real
events speak, and a synthetic one must never contradict them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from service.stripe_shapes import read_price, read_subscription
from service.stripe_shapes.events import RawEvent
from service.stripe_shapes.fields import as_mapping, get_int, list_data
from service.stripe_shapes.invoice_lines import BilledLine, billed_lines, subscription_discounts

SYNTHETIC_PREFIXES = ("evt_bf_", "evt_rc_")  # Stripe's own ids never contain a second "_"


def is_synthetic(event_id: str) -> bool:
    """Whether a stored event is one of ours (a `RawEvent` built here, not sent by Stripe)."""
    return event_id.startswith(SYNTHETIC_PREFIXES)


@dataclass(frozen=True, slots=True)
class FirstReal:
    """The earliest stored event Stripe sent about the subscription."""

    created: int
    type: str


class Pricing(Protocol):
    def line_price(self, line: BilledLine, currency: str | None) -> Mapping[str, Any] | None: ...

    def complete_discount(self, discount: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class Item:
    key: str  # subscription item id, or "price:<id>" when lines did not name the item
    price: Mapping[str, Any]
    quantity: int | None

    @property
    def signature(self) -> tuple[str, Any, int | None]:
        return (self.key, self.price.get("id"), self.quantity)


@dataclass(frozen=True, slots=True)
class ItemState:
    at: int
    items: tuple[Item, ...]
    discounts: tuple[Mapping[str, Any], ...]  # subscription-level, as invoiced then
    period: tuple[int, int] | None

    @property
    def signature(self) -> tuple[Any, ...]:
        return (
            tuple(i.signature for i in self.items),
            tuple(sorted(str(d.get("id")) for d in self.discounts)),
        )


def _licensed_recurring(price: Mapping[str, Any]) -> bool:
    snap = read_price(price)
    return snap.interval is not None and snap.usage_type == "licensed"


def _apply_proration(current: dict[str, Item], entries: list[tuple[BilledLine, Item]]) -> None:
    """Debit lines are the new state of their item; a credit alone removes the item."""
    by_price = {i.price.get("id"): key for key, i in current.items()}
    credited, debits = set(), {}
    for line, item in entries:
        key = line.key
        if key.startswith("price:"):  # an invoice-item proration names only the price
            key = by_price.get(line.price_id, key)
        if line.credit:
            credited.add(key)
        else:
            debits[key] = Item(key, item.price, item.quantity)
    for key in credited - debits.keys():
        current.pop(key, None)
    current.update(debits)


def item_timeline(
    sub_id: str, invoices: Iterable[Mapping[str, Any]], pricing: Pricing, currency: str | None
) -> list[ItemState]:
    """The subscription's licensed items at each instant the invoices show a change."""
    periods: dict[int, dict[str, Item]] = defaultdict(dict)
    period_end: dict[int, int] = {}
    discounts: dict[int, dict[str, Mapping[str, Any]]] = defaultdict(dict)
    prorations: dict[int, list[tuple[BilledLine, Item]]] = defaultdict(list)
    ordered = sorted(invoices, key=lambda i: (get_int(i, "created") or 0, str(i.get("id"))))
    for invoice in ordered:
        starts = set()
        for line in billed_lines(invoice):
            if line.subscription != sub_id:
                continue
            price = pricing.line_price(line, currency)
            if price is None:
                # Stripe no longer has it: keep the item, so that the projector reports it
                # as unpriced instead of silently dropping its revenue.
                price = {"id": line.price_id, "object": "price"}
            elif not _licensed_recurring(price):
                continue  # metered (no MRR) or one-time
            item = Item(line.key, price, line.quantity)
            if line.proration:
                prorations[line.start].append((line, item))
            else:
                periods[line.start][line.key] = item
                period_end[line.start] = max(period_end.get(line.start, line.end), line.end)
                starts.add(line.start)
        for discount in subscription_discounts(invoice, sub_id):
            full = pricing.complete_discount(discount)
            for start in starts:
                discounts[start][str(full.get("id"))] = full

    states: list[ItemState] = []
    current: dict[str, Item] = {}
    active_discounts: dict[str, Mapping[str, Any]] = {}
    for at in sorted(periods.keys() | prorations.keys()):
        if at in periods:  # a billed period lists every licensed item
            current = dict(periods[at])
            active_discounts = discounts.get(at, {})
            period = (at, period_end[at])
        else:
            _apply_proration(current, prorations[at])
            period = (at, max(line.end for line, _ in prorations[at]))
        items = tuple(sorted(current.values(), key=lambda i: i.key))
        state = ItemState(at, items, tuple(active_discounts.values()), period)
        if not states or states[-1].signature != state.signature:
            states.append(state)
    return states


def current_state(sub: Mapping[str, Any]) -> ItemState:
    items = []
    for raw in list_data(sub.get("items")):
        raw = as_mapping(raw)
        price = raw.get("price") if isinstance(raw.get("price"), Mapping) else raw.get("plan")
        if isinstance(price, Mapping) and _licensed_recurring(price):
            items.append(Item(str(raw.get("id")), price, get_int(raw, "quantity")))
    refs = [sub.get("discount"), *list_data(sub.get("discounts"))]
    discounts = tuple(d for d in refs if isinstance(d, Mapping))
    return ItemState(0, tuple(sorted(items, key=lambda i: i.key)), discounts, None)


# --- snapshots ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    at: int
    status: str
    state: ItemState
    cancel_pending: bool

    @property
    def signature(self) -> tuple[Any, ...]:
        return (self.status, self.state.signature, self.cancel_pending)


def _item_payload(item: Item, current: Mapping[str, Mapping[str, Any]], sub_id: str) -> dict:
    existing = current.get(item.key)
    if existing is not None:
        out = dict(existing)  # shallow: only top-level keys change below
        price = as_mapping(existing.get("price")) or as_mapping(existing.get("plan"))
        if price.get("id") == item.price.get("id"):
            out["quantity"] = item.quantity
            return out
    else:
        out = {
            "id": None if item.key.startswith("price:") else item.key,
            "object": "subscription_item",
            "discounts": [],
            "metadata": {},
            "subscription": sub_id,
        }
    out.pop("plan", None)  # read_item prefers `price`; a stale plan would only mislead
    out["price"] = dict(item.price)
    out["quantity"] = item.quantity
    return out


def _merge_discounts(sub: Mapping[str, Any], historic: Sequence[Mapping[str, Any]]) -> list[Any]:
    merged: dict[str, Any] = {}
    singular = sub.get("discount")
    for d in [singular, *list_data(sub.get("discounts")), *historic]:
        if isinstance(d, Mapping):
            merged.setdefault(str(d.get("id") or d.get("coupon")), dict(d))
        elif isinstance(d, str) and d:
            merged.setdefault(d, d)
    return list(merged.values())


def snapshot(sub: Mapping[str, Any], entry: _Entry) -> dict[str, Any]:
    """The current object `sub` as it was at `entry`."""
    # Shallow: every field changed below is replaced, never mutated in place, so the
    # snapshots share the unchanged parts of `sub` (they are serialized right away).
    obj = dict(sub)
    sub_id = str(sub.get("id"))
    current = {str(i.get("id")): i for i in list_data(sub.get("items")) if isinstance(i, Mapping)}
    items = [_item_payload(i, current, sub_id) for i in entry.state.items]
    legacy = "current_period_start" in sub or "current_period_end" in sub
    if entry.state.period is not None:
        start, end = entry.state.period
        targets = [obj] if legacy else items
        for target in targets:
            target["current_period_start"], target["current_period_end"] = start, end
    obj["items"] = {**dict(sub.get("items") or {}), "data": items, "has_more": False}
    obj["status"] = entry.status
    obj["ended_at"] = None
    obj["pause_collection"] = None
    if not entry.cancel_pending:
        obj.update(cancel_at=None, cancel_at_period_end=False, canceled_at=None)
        obj["cancellation_details"] = {"comment": None, "feedback": None, "reason": None}
    if "discount" in obj:
        obj["discount"] = None  # all of them go to `discounts`, expanded
    obj["discounts"] = _merge_discounts(sub, entry.state.discounts)
    return obj


def discount_events(sub: Mapping[str, Any]) -> list[RawEvent]:
    """`customer.discount.created` for each discount `sub` has now, expanded.

    Events in the window (and later webhooks) name discounts by id only; the discount's own
    event is often older than the window. Without these, the projector could not join them.
    """
    found = [sub.get("discount"), *list_data(sub.get("discounts"))]
    for raw in list_data(sub.get("items")):
        found += list_data(as_mapping(raw).get("discounts"))
    events = []
    for discount in found:
        if not isinstance(discount, Mapping) or not isinstance(discount.get("id"), str):
            continue  # a bare id, or an id-less legacy discount (embedded where it applies)
        start = get_int(discount, "start") or get_int(sub, "start_date") or 0
        obj = {**discount, "customer": discount.get("customer") or sub.get("customer")}
        event_id = f"evt_bf_{discount['id']}_created_{start}"
        events.append(RawEvent(event_id, "customer.discount.created", start, obj))
    return events


def reconstruct(
    sub: Mapping[str, Any],
    invoices: Iterable[Mapping[str, Any]],
    pricing: Pricing,
    *,
    first_real: FirstReal | None,
    window_start: int,
    now: int,
) -> list[RawEvent]:
    """Synthetic snapshots of `sub` (the complete current object) before `first_real`."""
    if first_real is not None and first_real.type == "customer.subscription.created":
        return []  # its whole life is within the events Stripe still has
    snap = read_subscription(sub)
    start = snap.start_date or snap.created
    if snap.id is None or start is None:
        return []
    sub_id = snap.id
    if snap.status in ("incomplete", "incomplete_expired"):
        # Never paid, never counted: one snapshot as it is.
        events = [RawEvent(_id(sub_id, "created", start), _type(0), start, dict(sub))]
        return [e for e in events if first_real is None or e.created < first_real.created]

    states = item_timeline(sub_id, invoices, pricing, snap.currency or None) or [current_state(sub)]
    end = snap.ended_at
    trial_end = snap.trial_end if snap.trial_end and snap.trial_end > start else None
    # Stripe pauses a trial that ends without a payment method: nothing was billed after.
    paused_at_trial_end = (
        snap.status == "paused"
        and trial_end is not None
        and not any(s.at >= trial_end for s in states)
    )
    # `canceled_at` is when cancellation was requested; before the end it was pending.
    requested = snap.canceled_at
    scheduled = snap.cancel_at_period_end or snap.cancel_at is not None or end is not None
    cancel_pending_from = None
    if requested is not None and scheduled and (end is None or requested < end):
        cancel_pending_from = requested

    instants = {start, *(s.at for s in states if s.at > start)}
    instants |= {t for t in (trial_end, cancel_pending_from) if t is not None}
    entries: list[_Entry] = []
    for at in sorted(t for t in instants if (end is None or t < end) and t <= now):
        state = next((s for s in reversed(states) if s.at <= at), states[0])
        status = "active"
        if trial_end is not None and at < trial_end:
            status = "trialing"
        elif paused_at_trial_end:
            status = "paused"
        pending = cancel_pending_from is not None and at >= cancel_pending_from
        entry = _Entry(at, status, state, pending)
        if not entries or entries[-1].signature != entry.signature:
            entries.append(entry)

    events = [
        RawEvent(_id(sub_id, _kind(i), e.at), _type(i), e.at, snapshot(sub, e))
        for i, e in enumerate(entries)
    ]
    if end is not None:
        events.append(RawEvent(_id(sub_id, "deleted", end), _DELETED, end, dict(sub)))
    elif entries and first_real is None:
        last = entries[-1]
        pending = cancel_pending_from is not None
        now_state = _Entry(last.at, snap.status, current_state(sub), pending)
        if now_state.signature != last.signature:
            # Changed after the last invoice, at an unknown instant, and before the events
            # window (or an event would say when): assume the latest such instant.
            at = min(max(last.at + 1, window_start), now)
            events.append(RawEvent(_id(sub_id, _kind(1), at), _type(1), at, dict(sub)))
    if first_real is not None:
        events = [e for e in events if e.created < first_real.created]
    return events


_DELETED = "customer.subscription.deleted"


def _kind(index: int) -> str:
    return "created" if index == 0 else "updated"


def _type(index: int) -> str:
    return f"customer.subscription.{_kind(index)}"


def _id(sub_id: str, kind: str, at: int) -> str:
    return f"evt_bf_{sub_id}_{kind}_{at}"
