"""From one customer's Stripe events to failed-payment episodes (design §6).

Pure: no database, no clock. An episode depends only on the set of events (never on
their arrival order or duplicates), like the ledger, so rebuild equals incremental.

Rules (the decisions where Stripe's flow is ambiguous are marked DECISION):

* An episode exists for an invoice with at least one `invoice.payment_failed`; it starts
  at the first. `payment_action_required` alone does not start one (Stripe also sends
  `payment_failed` when a renewal needs authentication); it flags `action_required`.
* It ends at the earliest terminal marker: paid (`invoice.paid`/`payment_succeeded`, an
  `invoice.updated` with status paid, or `status_transitions.paid_at`), voided,
  marked uncollectible, or its subscription canceled while the episode was open.
* DECISION: paid wins. An uncollectible invoice (or one whose subscription was canceled)
  that is paid later is recovered: the money came in. A void invoice cannot be paid.
* DECISION: a cancellation before the first failure (a final invoice failing after the
  subscription ended) does not end the episode; only the invoice's own fate does.
* DECISION: a subscription marked `unpaid` leaves its episode open (Stripe stops retrying
  but the invoice can still be paid, which reactivates the subscription); its MRR is 0 in
  the ledger, so it adds nothing to MRR at risk.
* Decline code and message come from `charge.failed` / `payment_intent.payment_failed`,
  the most recent linked one. Links: the failure's own `invoice` (before basil), the
  invoice's `charge`/`payment_intent`/`payments`, the charge's payment intent. DECISION:
  basil webhooks carry none of these, so an unlinked failure is matched to the customer's
  failed invoice of the same currency and amount whose `payment_failed` is closest in
  time, within MATCH_WINDOW_S.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.ledger.timeline import TERMINAL_STATUSES, DunningWindow
from service.payments.models import LostReason, Outcome
from service.stripe_shapes import read_subscription
from service.stripe_shapes.charge import (
    PaymentFailure,
    read_charge_failure,
    read_payment_intent_failure,
)
from service.stripe_shapes.events import (
    FAILED,
    INVOICE_EVENTS,
    PAID_EVENTS,
    SUBSCRIPTION_EVENTS,
    RawEvent,
)
from service.stripe_shapes.invoice import InvoiceSnapshot, read_invoice

# Stripe sends charge.failed, payment_intent.payment_failed and invoice.payment_failed
# within seconds of each other; retries of one invoice are days apart.
MATCH_WINDOW_S = 900

# On equal `created`, an invoice's terminal snapshot is its latest state.
_TYPE_RANK = {FAILED: 0, "invoice.payment_action_required": 0, "invoice.updated": 1}
_MARKER_RANK = {"paid": 0, LostReason.voided: 1, LostReason.uncollectible: 2}


@dataclass(frozen=True, slots=True)
class Episode:
    invoice_id: str
    subscription_id: str | None
    currency: str
    amount_due: int
    attempts: int
    first_failure_at: int
    last_failure_at: int
    next_retry_at: int | None
    decline_code: str | None
    failure_message: str | None
    billing_reason: str | None
    action_required: bool
    outcome: Outcome
    lost_reason: LostReason | None
    closed_at: int | None
    recovered_at: int | None
    recovered_on_attempt: int | None
    # The end of dunning as the ledger sees it: the invoice's own fate, not the
    # cancellation (a cancellation inside the window is what makes churn involuntary).
    dunning_until: int | None
    event_ids: tuple[str, ...]

    @property
    def time_to_recover_s(self) -> int | None:
        if self.recovered_at is None:
            return None
        return max(0, self.recovered_at - self.first_failure_at)


def has_failed_payment(rows: Iterable[Any], now: int) -> bool:
    """Whether `build_episodes` can find any episode in these events (rows or RawEvents):
    without an `invoice.payment_failed` up to `now` there is none, whatever the rest say."""
    return any(r.type == FAILED and r.created <= now for r in rows)


Snap = tuple[RawEvent, InvoiceSnapshot]
Failure = tuple[RawEvent, PaymentFailure]


def _cancellations(events: Iterable[RawEvent]) -> dict[str, tuple[int, str]]:
    """Each subscription's first terminal snapshot (as the ledger orders them)."""
    found: dict[str, tuple[int, str]] = {}
    for e in events:
        sub = read_subscription(e.obj)
        terminal = e.type == "customer.subscription.deleted" or sub.status in TERMINAL_STATUSES
        if sub.id and terminal:
            found[sub.id] = min(found.get(sub.id, (e.created, e.event_id)), (e.created, e.event_id))
    return found


def _closest_failed_invoice(
    f: Failure, invoices: Mapping[str, Sequence[Snap]], failed: Mapping[str, list[int]]
) -> str | None:
    event, failure = f
    best: tuple[int, str] | None = None
    for inv_id, times in failed.items():
        snaps = [s for _, s in invoices[inv_id]]
        amounts = {s.amount_due for s in snaps} | {s.amount_remaining for s in snaps}
        if failure.amount not in amounts or failure.currency not in {s.currency for s in snaps}:
            continue
        distance = min(abs(t - event.created) for t in times)
        if distance <= MATCH_WINDOW_S and (best is None or (distance, inv_id) < best):
            best = (distance, inv_id)
    return None if best is None else best[1]


def _link_failures(
    invoices: Mapping[str, Sequence[Snap]],
    failures: Sequence[Failure],
    failed: Mapping[str, list[int]],
) -> dict[str, list[Failure]]:
    by_charge: dict[str, set[str]] = defaultdict(set)
    by_intent: dict[str, set[str]] = defaultdict(set)
    for inv_id, snaps in invoices.items():
        for _, s in snaps:
            for c in s.charge_ids:
                by_charge[c].add(inv_id)
            for i in s.payment_intent_ids:
                by_intent[i].add(inv_id)
    for _, f in failures:
        if f.invoice:
            if f.charge:
                by_charge[f.charge].add(f.invoice)
            if f.payment_intent:
                by_intent[f.payment_intent].add(f.invoice)

    def explicit(f: PaymentFailure) -> str | None:
        # A charge or intent belongs to one invoice; min() only keeps bad data deterministic.
        candidates = by_charge.get(f.charge or "") or by_intent.get(f.payment_intent or "")
        return f.invoice or (min(candidates) if candidates else None)

    linked: dict[str, list[Failure]] = defaultdict(list)
    for f in failures:
        inv_id = explicit(f[1]) or _closest_failed_invoice(f, invoices, failed)
        if inv_id in failed:
            linked[inv_id].append(f)
    return linked


def _markers(snaps: Sequence[Snap]) -> list[tuple[int, int, str]]:
    """(time, rank, kind) of every paid / voided / uncollectible sign in the snapshots."""
    found = []
    for e, s in snaps:
        signs = (
            ("paid", s.paid_at, e.type in PAID_EVENTS or s.paid),
            (LostReason.voided, s.voided_at, e.type == "invoice.voided" or s.status == "void"),
            (
                LostReason.uncollectible,
                s.marked_uncollectible_at,
                e.type == "invoice.marked_uncollectible" or s.status == "uncollectible",
            ),
        )
        for kind, at, flagged in signs:
            if at is not None or flagged:
                found.append((at if at is not None else e.created, _MARKER_RANK[kind], kind))
    return sorted(found)


def _latest(snaps: Sequence[Snap], attr: str) -> Any:
    values = (getattr(s, attr) for _, s in reversed(snaps))
    return next((v for v in values if v is not None), None)


def _episode(
    inv_id: str,
    snaps: list[Snap],
    failures: list[Failure],
    cancellations: Mapping[str, tuple[int, str]],
) -> Episode:
    snaps = sorted(
        snaps,
        key=lambda p: (
            p[0].created,
            p[1].attempt_count or 0,
            _TYPE_RANK.get(p[0].type, 2),
            p[0].event_id,
        ),
    )
    failed_at = sorted(e.created for e, _ in snaps if e.type == FAILED)
    first = failed_at[0]
    subscription = _latest(snaps, "subscription")
    markers = _markers(snaps)
    dunning_until = markers[0][0] if markers else None
    paid = [m for m in markers if m[2] == "paid"]
    losses = [m for m in markers if m[2] != "paid"]
    event_ids = {e.event_id: e.created for e, _ in [*snaps, *failures]}
    cancel = cancellations.get(subscription or "")
    if cancel and first <= cancel[0] and (dunning_until is None or cancel[0] <= dunning_until):
        losses.append((cancel[0], 3, LostReason.subscription_canceled))
        event_ids[cancel[1]] = cancel[0]
    losses.sort()
    ends = sorted(paid + losses)

    outcome, lost_reason = Outcome.open, None
    if paid:
        outcome = Outcome.recovered
    elif losses:
        outcome, lost_reason = Outcome.lost, LostReason(losses[0][2])
    max_count = max((s.attempt_count or 0 for _, s in snaps), default=0)
    paid_counts = [s.attempt_count or 0 for _, s in snaps if s.paid]
    attempts = max(max_count, len(failed_at) + (1 if paid else 0))
    by_time = sorted(failures, key=lambda f: (f[0].created, f[1].kind, f[0].event_id))
    return Episode(
        invoice_id=inv_id,
        subscription_id=subscription,
        currency=_latest(snaps, "currency") or "",
        amount_due=_latest(snaps, "amount_due") or 0,
        attempts=attempts,
        first_failure_at=first,
        last_failure_at=failed_at[-1],
        # The latest snapshot's value even when null: null means Stripe stopped retrying.
        next_retry_at=snaps[-1][1].next_payment_attempt if outcome is Outcome.open else None,
        decline_code=next((f.decline_code for _, f in reversed(by_time) if f.decline_code), None),
        failure_message=next((f.message for _, f in reversed(by_time) if f.message), None),
        billing_reason=_latest(snaps, "billing_reason"),
        action_required=any(e.type == "invoice.payment_action_required" for e, _ in snaps),
        outcome=outcome,
        lost_reason=lost_reason,
        closed_at=ends[0][0] if ends else None,
        recovered_at=paid[0][0] if paid else None,
        # Out-of-band payments do not bump attempt_count: count them after the failures.
        recovered_on_attempt=max([*paid_counts, len(failed_at) + 1]) if paid else None,
        dunning_until=dunning_until,
        event_ids=tuple(k for k, _ in sorted(event_ids.items(), key=lambda kv: (kv[1], kv[0]))),
    )


def build_episodes(events: Iterable[RawEvent], *, now: int) -> list[Episode]:
    """Every failed-payment episode of one customer, as of unix time `now`."""
    unique = [e for e in {e.event_id: e for e in events}.values() if e.created <= now]
    invoices: dict[str, list[Snap]] = defaultdict(list)
    failures: list[Failure] = []
    for e in unique:
        if e.type in INVOICE_EVENTS:
            invoice = read_invoice(e.obj)
            if invoice.id:
                invoices[invoice.id].append((e, invoice))
        elif e.type == "charge.failed":
            failures.append((e, read_charge_failure(e.obj)))
        elif e.type == "payment_intent.payment_failed":
            failures.append((e, read_payment_intent_failure(e.obj)))
    failed = {
        inv_id: sorted(e.created for e, _ in snaps if e.type == FAILED)
        for inv_id, snaps in invoices.items()
        if any(e.type == FAILED for e, _ in snaps)
    }
    if not failed:
        return []  # most customers: no failure, so no need to read their subscriptions
    linked = _link_failures(invoices, failures, failed)
    cancellations = _cancellations(e for e in unique if e.type in SUBSCRIPTION_EVENTS)
    episodes = [
        _episode(inv_id, invoices[inv_id], linked.get(inv_id, []), cancellations)
        for inv_id in failed
    ]
    return sorted(episodes, key=lambda ep: (ep.first_failure_at, ep.invoice_id))


def dunning_windows(episodes: Iterable[Episode]) -> dict[str, tuple[DunningWindow, ...]]:
    """Per subscription, the [first failure, end] spans in which a cancellation is
    involuntary churn (both ends inclusive: Stripe cancels and voids in the same second)."""
    windows: dict[str, list[DunningWindow]] = defaultdict(list)
    for ep in episodes:
        if ep.subscription_id:
            windows[ep.subscription_id].append((ep.first_failure_at, ep.dunning_until))
    return {sub: tuple(sorted(w, key=lambda x: (x[0], x[1] or 0))) for sub, w in windows.items()}
