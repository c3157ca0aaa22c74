"""`churn-ledger reconcile`: the ledger's current MRR per subscription against Stripe's.

Drift comes from missed webhooks, events older than Stripe's 30-day retention, or a
backfill's guesses. Each subscription's MRR is computed from Stripe's current object with
the ledger's own MRR code (design §3) and compared with `SubscriptionState.mrr`. With
`repair`, each drifted subscription gets a synthetic `customer.subscription.updated`
snapshot of Stripe's object at `now` (source=reconcile), and the ledger is projected, so
it converges without rewriting any history before now.

Flush only: the caller's edge (CLI or admin request) commits. `reconcile_request` is the
admin request's job (service/app.py injects it, see service/sync/reconciler.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import stripe
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.sync.catalog import Catalog
from jobs.sync.event_io import store_envelopes, synthetic_envelope
from jobs.sync.stripe_client import StripeApi, StripeNotConfiguredError, make_stripe_client
from service.kit.time import now_ts
from service.ledger.models import SubscriptionState
from service.ledger.mrr import subscription_mrr
from service.ledger.timeline import TERMINAL_STATUSES
from service.projector.service import project_pending
from service.settings import LedgerOptions, Settings
from service.stripe_shapes import read_subscription
from service.stripe_shapes.events import RawEvent
from service.sync.models import ReconcileRun
from service.sync.reconciler import ReconcileUnavailableError
from service.sync.repository import SyncRepository
from service.webhooks.models import EventSource

LIST_EXPAND = {"expand": ["data.discounts", "data.items.data.discounts"]}
ONE_EXPAND = {"expand": ["discounts", "items.data.discounts"]}


@dataclass
class Difference:
    subscription_id: str
    customer_id: str | None
    currency: str
    ledger_mrr: int
    stripe_mrr: int
    ledger_status: str | None  # None: the ledger has never seen the subscription
    stripe_status: str | None  # None: Stripe has no such subscription
    repair_event_id: str | None = None

    @property
    def delta(self) -> int:
        return self.stripe_mrr - self.ledger_mrr


@dataclass
class ReconcileReport:
    account: str
    as_of: int
    checked: int = 0
    differences: list[Difference] = field(default_factory=list)
    repaired: int = 0
    # After repair: the subscriptions whose ledger MRR still differs (should be none).
    unresolved: list[str] = field(default_factory=list)

    def drift_mrr(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for d in self.differences:
            totals[d.currency] = totals.get(d.currency, 0) + abs(d.delta)
        return dict(sorted(totals.items()))

    def as_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "as_of": self.as_of,
            "checked": self.checked,
            "drifted": len(self.differences),
            "repaired": self.repaired,
            "unresolved": self.unresolved,
            "drift_mrr": self.drift_mrr(),
            "differences": [{**asdict(d), "delta": d.delta} for d in self.differences],
        }


def _repair_id(sub: dict[str, Any], at: int) -> str:
    # Same object at the same instant → same id: repeating a repair stores nothing.
    digest = hashlib.sha256(json.dumps(sub, sort_keys=True).encode()).hexdigest()[:12]
    return f"evt_rc_{sub['id']}_{at}_{digest}"


class Reconciler:
    def __init__(
        self, session: Session, api: StripeApi, options: LedgerOptions, *, account: str = ""
    ) -> None:
        self.session = session
        self.api = api
        self.options = options
        self.account = account
        self.catalog = Catalog(api)

    def _drain(self, now: int) -> None:
        while project_pending(self.session, self.options, now=now):
            pass

    def _ledger(self) -> dict[str, SubscriptionState]:
        # populate_existing: projection rewrites these rows with Core statements, which
        # the session's identity map does not see.
        rows = self.session.scalars(
            select(SubscriptionState)
            .where(SubscriptionState.account == self.account)
            .execution_options(populate_existing=True)
        )
        return {s.subscription_id: s for s in rows}

    def _stripe_objects(
        self, ledger: dict[str, SubscriptionState]
    ) -> dict[str, dict[str, Any] | None]:
        """Stripe's live subscriptions, plus any the ledger still counts that are not."""
        found: dict[str, dict[str, Any] | None] = {}
        for page in self.api.pages("/v1/subscriptions", LIST_EXPAND):
            for sub in page.objects:
                found[sub["id"]] = self.catalog.complete_subscription(sub)
        # The default list leaves out canceled subscriptions: look those up one by one
        # rather than listing an account's whole canceled history.
        for sub_id, state in ledger.items():
            if sub_id in found or (state.mrr == 0 and state.status in TERMINAL_STATUSES):
                continue
            obj = self.api.retrieve(f"/v1/subscriptions/{sub_id}", ONE_EXPAND)
            found[sub_id] = None if obj is None else self.catalog.complete_subscription(obj)
        return found

    def _stripe_mrr(self, obj: dict[str, Any], state: SubscriptionState | None, now: int) -> int:
        snap = read_subscription(obj)
        counts = True
        if self.options.past_due_grace_days is not None and snap.status == "past_due":
            # The object does not say since when it is past due; the ledger's events do.
            counts = state is not None and state.mrr > 0
        return subscription_mrr(snap, now, past_due_counts=counts)

    def run(self, *, now: int | None = None, repair: bool = False) -> ReconcileReport:
        now = now_ts() if now is None else now
        self._drain(now)  # the ledger as of now, including changes that were only due
        ledger = self._ledger()
        report = ReconcileReport(self.account, now)
        objects = self._stripe_objects(ledger)
        for sub_id, obj in sorted(objects.items()):
            state = ledger.get(sub_id)
            report.checked += 1
            stripe_mrr = 0 if obj is None else self._stripe_mrr(obj, state, now)
            currency = read_subscription(obj).currency if obj else state.currency
            ledger_mrr = state.mrr if state is not None else 0
            same_currency = state is None or state.currency == currency
            if stripe_mrr == ledger_mrr and (same_currency or stripe_mrr == 0):
                continue
            report.differences.append(
                Difference(
                    subscription_id=sub_id,
                    customer_id=state.customer_id if state else read_subscription(obj).customer,
                    currency=currency,
                    ledger_mrr=ledger_mrr,
                    stripe_mrr=stripe_mrr,
                    ledger_status=state.status if state else None,
                    stripe_status=obj.get("status") if obj else None,
                )
            )
        if repair:
            self._repair(report, objects, now)
        return report

    def _repair(
        self, report: ReconcileReport, objects: dict[str, dict[str, Any] | None], now: int
    ) -> None:
        for diff in report.differences:
            obj = objects.get(diff.subscription_id)
            if obj is None:
                continue  # nothing to snapshot; reported as unresolved below
            event = RawEvent(_repair_id(obj, now), "customer.subscription.updated", now, obj)
            envelope = synthetic_envelope(
                event, account=self.account, api_version=stripe.api_version
            )
            store_envelopes(self.session, [envelope], EventSource.reconcile)
            diff.repair_event_id = event.event_id
            report.repaired += 1
        self.session.flush()
        self._drain(now)
        ledger = self._ledger()
        for diff in report.differences:
            state = ledger.get(diff.subscription_id)
            if state is None or state.mrr != diff.stripe_mrr:
                report.unresolved.append(diff.subscription_id)


def record_run(session: Session, report: ReconcileReport, trigger: str) -> ReconcileRun:
    return SyncRepository(session).add_run(
        ReconcileRun(
            account=report.account,
            trigger=trigger,
            as_of=report.as_of,
            finished_at=datetime.now(UTC),
            checked=report.checked,
            drifted=len(report.differences),
            repaired=report.repaired,
            drift_mrr=report.drift_mrr(),
            report=report.as_json(),
        )
    )


def reconcile(
    session: Session,
    api: StripeApi,
    options: LedgerOptions,
    *,
    account: str = "",
    repair: bool = False,
    now: int | None = None,
    trigger: str = "cli",
) -> ReconcileReport:
    report = Reconciler(session, api, options, account=account).run(now=now, repair=repair)
    record_run(session, report, trigger)
    return report


def reconcile_request(
    session: Session, settings: Settings, *, account: str, repair: bool
) -> dict[str, Any]:
    """POST /v1/admin/reconcile's job (`service.sync.reconciler.ReconcileJob`)."""
    try:
        api = StripeApi(make_stripe_client(settings, account=account or None))
    except StripeNotConfiguredError as exc:
        raise ReconcileUnavailableError(str(exc)) from None
    report = reconcile(
        session, api, settings.ledger_options(), account=account, repair=repair, trigger="api"
    )
    return report.as_json()
