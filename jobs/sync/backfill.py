"""`churn-ledger backfill`: import a Stripe account's history into the event store.

Resources are listed in an order that makes each one's page self-contained:

1. events still available (the last 30 days), stored as-is: their ids are Stripe's, so a
   webhook of the same event later is a duplicate;
2. customers, as synthetic `customer.created`;
3. invoices (with all their lines), as one synthetic event of their latest status;
4. subscriptions (`status=all`): their history before the earliest real event, rebuilt from
   their dates and the invoices stored in step 3 (jobs/sync/history.py).

Every stored event is marked `source=backfill`; synthetic ones have deterministic ids
(`evt_bf_<object>_<kind>_<instant>`), so a re-run stores nothing new. A job is its own edge:
each page commits with its cursor, so an interrupted run resumes at the page it was on and
never refetches a finished resource. The ledger projection runs at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import stripe
from sqlalchemy import text
from sqlalchemy.orm import Session

from jobs.sync.catalog import Catalog
from jobs.sync.event_io import (
    fetched_envelope,
    first_real_events,
    objects_with_real_events,
    store_envelopes,
    stored_invoices,
    synthetic_envelope,
)
from jobs.sync.history import discount_events, reconstruct
from jobs.sync.stripe_client import StripeApi
from service.kit.time import DAY_S, now_ts
from service.projector.service import project_pending
from service.settings import LedgerOptions
from service.stripe_shapes.events import READ_EVENTS, RawEvent
from service.stripe_shapes.fields import as_mapping, expandable_id, get_int
from service.sync.repository import SyncRepository
from service.webhooks.models import EventSource

RESOURCES = ("events", "customers", "invoices", "subscriptions")
EVENTS_WINDOW_S = 30 * DAY_S
# What the projectors read, from the one catalogue, and customers (for the customer list
# of accounts with no subscription events yet). Stripe allows at most 20 types per call.
EVENT_TYPES = sorted(READ_EVENTS | {"customer.created"})
# The latest status of an invoice, as the event that would have announced it, and when.
INVOICE_STATUS_EVENTS = {
    "open": ("invoice.finalized", "finalized_at"),
    "paid": ("invoice.paid", "paid_at"),
    "void": ("invoice.voided", "voided_at"),
    "uncollectible": ("invoice.marked_uncollectible", "marked_uncollectible_at"),
}

Progress = Callable[[str, int, bool], None]  # resource, objects so far, finished


@dataclass(frozen=True, slots=True)
class BackfillOptions:
    account: str = ""  # "" is the platform itself; acct_... a connected account
    since: int | None = None  # ignore invoices (and ended subscriptions) before this
    now: int | None = None  # fixed in tests; the clock otherwise


@dataclass
class ResourceStats:
    fetched: int = 0
    stored: int = 0
    pages: int = 0
    resumed: bool = False
    skipped: bool = False  # finished by an earlier, interrupted run
    seconds: float = 0.0


@dataclass
class BackfillReport:
    account: str
    resources: dict[str, ResourceStats] = field(default_factory=dict)
    projected_customers: int = 0
    projection_seconds: float = 0.0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0

    @property
    def stored(self) -> int:
        return sum(r.stored for r in self.resources.values())


def _ended_before(sub: Mapping[str, Any], instant: int) -> bool:
    ended_at = get_int(sub, "ended_at")
    return ended_at is not None and ended_at < instant


def customer_event(customer: Mapping[str, Any]) -> RawEvent | None:
    created = get_int(customer, "created")
    if not isinstance(customer.get("id"), str) or created is None:
        return None
    event_id = f"evt_bf_{customer['id']}_created_{created}"
    return RawEvent(event_id, "customer.created", created, dict(customer))


def invoice_event(invoice: Mapping[str, Any]) -> RawEvent | None:
    """The event of the invoice's latest status (drafts can still change: none)."""
    found = INVOICE_STATUS_EVENTS.get(str(invoice.get("status")))
    if found is None or not isinstance(invoice.get("id"), str):
        return None
    type_, field_name = found
    at = get_int(as_mapping(invoice.get("status_transitions")), field_name)
    at = at if at is not None else get_int(invoice, "created") or 0
    event_id = f"evt_bf_{invoice['id']}_{invoice['status']}_{at}"
    return RawEvent(event_id, type_, at, dict(invoice))


class Backfill:
    def __init__(
        self,
        session: Session,
        api: StripeApi,
        options: BackfillOptions,
        ledger: LedgerOptions,
        *,
        progress: Progress | None = None,
    ) -> None:
        self.session = session
        self.api = api
        self.options = options
        self.ledger = ledger
        self.progress = progress or (lambda _r, _n, _d: None)
        self.now = options.now if options.now is not None else now_ts()
        self.catalog = Catalog(api)
        self.report = BackfillReport(account=options.account)
        self._real_invoices: set[str] | None = None  # loaded once the events are stored

    def run(self) -> BackfillReport:
        started = time.perf_counter()
        try:
            for resource in RESOURCES:
                if resource == "subscriptions":
                    self._refresh_statistics()
                began = time.perf_counter()
                self._resource(resource)
                self.report.resources[resource].seconds = time.perf_counter() - began
            began = time.perf_counter()
            self._project()
            self.report.projection_seconds = time.perf_counter() - began
            # Finished: the next run is a full pass again (idempotent, so cheap to store).
            SyncRepository(self.session).clear_cursors(self.options.account)
            self.session.commit()
        except BaseException:
            self.session.rollback()  # the page in flight; committed pages stay
            raise
        finally:
            self.report.requests = self.api.requests
            self.report.retries = self.api.retries
            self.report.seconds = time.perf_counter() - started
        return self.report

    # --- listing with cursors --------------------------------------------------------

    def _query(self, resource: str) -> tuple[str, dict[str, Any]]:
        since = self.options.since
        created = {"created": {"gte": since}} if since is not None else {}
        if resource == "events":
            recent = since is not None and since > self.now - EVENTS_WINDOW_S
            return "/v1/events", {"types": EVENT_TYPES, **(created if recent else {})}
        if resource == "customers":
            return "/v1/customers", {}
        if resource == "invoices":
            return "/v1/invoices", {"expand": ["data.discounts"], **created}
        return "/v1/subscriptions", {
            "status": "all",
            "expand": ["data.discounts", "data.items.data.discounts"],
        }

    def _resource(self, resource: str) -> None:
        stats = self.report.resources.setdefault(resource, ResourceStats())
        path, params = self._query(resource)
        query_key = f"since={self.options.since}" if resource in ("events", "invoices") else ""
        cursor = SyncRepository(self.session).cursor(self.options.account, resource, query_key)
        if cursor.completed:
            stats.skipped = True
            self.progress(resource, cursor.objects, True)
            return
        stats.resumed = cursor.starting_after is not None
        handle = getattr(self, f"_store_{resource}")
        for page in self.api.pages(path, params, starting_after=cursor.starting_after):
            stats.stored += handle(page.objects)
            stats.fetched += len(page.objects)
            stats.pages += 1
            cursor.starting_after = page.last_id or cursor.starting_after
            cursor.pages += 1
            cursor.objects += len(page.objects)
            cursor.completed = not page.has_more
            self.session.commit()  # the page and its cursor, or neither
            self.progress(resource, cursor.objects, False)
        cursor.completed = True
        self.session.commit()
        self.progress(resource, cursor.objects, True)

    def _refresh_statistics(self) -> None:
        """PostgreSQL plans the per-page look-ups by customer and subscription from table
        statistics, which still describe the store before this run's tens of thousands of
        rows (autovacuum has not caught up): measured 5-10x slower pages without this."""
        if self.session.get_bind().dialect.name == "postgresql":
            self.session.execute(text("ANALYZE stripe_events"))
            self.session.commit()

    # --- one page of each resource -----------------------------------------------------

    def _synthetic(self, events: Iterable[RawEvent | None]) -> int:
        account = self.options.account
        envelopes = (
            synthetic_envelope(e, account=account, api_version=stripe.api_version)
            for e in events
            if e is not None
        )
        return store_envelopes(self.session, envelopes, EventSource.backfill)

    def _store_events(self, events: list[dict[str, Any]]) -> int:
        envelopes = (fetched_envelope(e, self.options.account) for e in events)
        return store_envelopes(self.session, envelopes, EventSource.backfill)

    def _store_customers(self, customers: list[dict[str, Any]]) -> int:
        return self._synthetic(customer_event(c) for c in customers)

    def _store_invoices(self, invoices: list[dict[str, Any]]) -> int:
        # Within the window Stripe's own invoice events say it better than we could.
        if self._real_invoices is None:
            self._real_invoices = objects_with_real_events(
                self.session, self.options.account, "invoice"
            )
        known = self._real_invoices
        events = []
        for invoice in invoices:
            event = invoice_event(invoice)
            if event is not None and invoice["id"] not in known:
                obj = self._all_lines(invoice)
                events.append(RawEvent(event.event_id, event.type, event.created, obj))
        return self._synthetic(events)

    def _all_lines(self, invoice: Mapping[str, Any]) -> dict[str, Any]:
        """The invoice with every line: lists embed only the first page of them."""
        lines = as_mapping(invoice.get("lines"))
        if not lines.get("has_more"):
            return dict(invoice)
        data = self.api.all(f"/v1/invoices/{invoice['id']}/lines")
        return {**invoice, "lines": {**lines, "data": data, "has_more": False}}

    def _store_subscriptions(self, subscriptions: list[dict[str, Any]]) -> int:
        since = self.options.since
        subs = [
            self.catalog.complete_subscription(s)
            for s in subscriptions
            if since is None or not _ended_before(s, since)
        ]
        account = self.options.account
        first = first_real_events(self.session, account, [str(s.get("id")) for s in subs])
        customers = {c for s in subs if (c := expandable_id(s.get("customer")))}
        invoices = stored_invoices(self.session, account, customers)
        events: list[RawEvent] = []
        for sub in subs:
            sub_id = str(sub.get("id"))
            events += discount_events(sub)
            events += reconstruct(
                sub,
                invoices.get(sub_id, []),
                self.catalog,
                first_real=first.get(sub_id),
                window_start=self.now - EVENTS_WINDOW_S,
                now=self.now,
            )
        return self._synthetic(events)

    # --- the ledger ------------------------------------------------------------------

    def _project(self) -> None:
        while done := project_pending(self.session, self.ledger, now=self.now):
            self.report.projected_customers += done
            self.session.commit()
            self.progress("ledger", self.report.projected_customers, False)
        self.progress("ledger", self.report.projected_customers, True)


def run_backfill(
    session: Session,
    api: StripeApi,
    options: BackfillOptions,
    ledger: LedgerOptions,
    *,
    progress: Progress | None = None,
) -> BackfillReport:
    return Backfill(session, api, options, ledger, progress=progress).run()
