"""Ledger reads (customers, subscriptions, movements) and FX rates. Services only flush;
the caller's edge commits."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from service.kit import pagination
from service.kit.errors import ApiError, invalid_parameter
from service.ledger import ecb
from service.ledger.fx import FxQuote, check_quotes
from service.ledger.models import Movement, MrrMovement, SubscriptionState
from service.ledger.repository import LedgerRepository
from service.ledger.schemas import (
    CustomerOut,
    CustomerSort,
    CustomersPage,
    CustomerSummaryOut,
    FxRateOut,
    FxRatesOut,
    Money,
    MovementOut,
    MrrOnDay,
    ReportingAmounts,
    SubscriptionChangeOut,
    SubscriptionDetailOut,
    SubscriptionOut,
    SubscriptionsPage,
    WarningOut,
)
from service.settings import LedgerOptions
from service.webhooks.repository import StripeEventRepository


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


def _ts(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _subscription_out(s: SubscriptionState) -> SubscriptionOut:
    return SubscriptionOut(
        subscription_id=s.subscription_id,
        customer_id=s.customer_id,
        status=s.status,
        mrr=Money.of(s.mrr, s.currency),
        plan=s.plan,
        plan_name=s.plan_name,
        billing_interval=s.billing_interval,
        cancel_at_period_end=s.cancel_at_period_end,
        started_at=_ts(s.started_at),
        ended_at=_ts(s.ended_at),
        last_event_id=s.last_event_id,
        metadata=s.metadata_,
    )


def as_of(session: Session, account: str) -> datetime | None:
    newest = StripeEventRepository(session).newest_handled(account)
    return datetime.fromtimestamp(newest, UTC) if newest else None


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
        as_of=as_of(session, account),
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


# CSV answers every matching customer; rows are read this many customers at a time.
CSV_CHUNK = 1000


def _cursor_types(sort: CustomerSort) -> tuple[type, ...]:
    return (str,) if sort is CustomerSort.customer_id else (int, str)


def _cursor_of(sort: CustomerSort, last: CustomerSummaryOut) -> str:
    if sort is CustomerSort.customer_id:
        return pagination.encode_cursor(last.customer_id)
    return pagination.encode_cursor(last.mrr.amount, last.customer_id)


def _after(sort: CustomerSort, cursor: str | None) -> tuple[Any, ...] | None:
    if not cursor:
        return None
    try:
        return pagination.decode_cursor(cursor, *_cursor_types(sort))
    except pagination.InvalidCursor as exc:
        # A cursor of another sort order decodes to the wrong types: refused, not misread.
        raise invalid_parameter("cursor", f"{exc} with this `sort`") from None


def _summaries(
    repo: LedgerRepository, account: str, reporting: str, rows: Sequence[Any]
) -> list[CustomerSummaryOut]:
    ids = [r.customer_id for r in rows]
    native: dict[str, dict[str, int]] = {}
    last: dict[str, Movement] = {}
    for customer_id, currency, to_mrr, movement in (
        repo.latest_per_currency(account, ids) if ids else ()
    ):
        native.setdefault(customer_id, {})[currency] = to_mrr
        last[customer_id] = movement
    return [
        CustomerSummaryOut(
            customer_id=r.customer_id,
            mrr=Money.of(int(r.mrr), reporting),
            mrr_by_currency=[
                Money.of(amount, cur)
                for cur, amount in sorted(native.get(r.customer_id, {}).items())
            ],
            first_mrr_day=r.first_mrr_day,
            last_movement_day=r.last_day,
            last_movement=last.get(r.customer_id),
        )
        for r in rows
    ]


def list_customers(
    session: Session,
    options: LedgerOptions,
    account: str,
    *,
    search: str | None,
    sort: CustomerSort,
    active: bool | None,
    cursor: str | None,
    limit: int,
) -> CustomersPage:
    repo = LedgerRepository(session)
    reporting = options.reporting_currency.lower()
    rows = repo.customer_summaries(
        account, reporting, search=search, sort=sort, active=active,
        after=_after(sort, cursor), limit=limit + 1,
    )  # fmt: skip
    page = _summaries(repo, account, reporting, rows[:limit])
    more = len(rows) > limit
    return CustomersPage(
        account=account,
        as_of=as_of(session, account),
        reporting_currency=reporting,
        unconverted_currencies=repo.unconverted_currencies(account, reporting, date.max),
        sort=sort,
        data=page,
        has_more=more,
        next_cursor=_cursor_of(sort, page[-1]) if more else None,
    )


def all_customers(
    session: Session,
    options: LedgerOptions,
    account: str,
    *,
    search: str | None,
    sort: CustomerSort,
    active: bool | None,
    cursor: str | None,
    chunk: int = CSV_CHUNK,
) -> Iterator[CustomerSummaryOut]:
    """Every matching customer from `cursor` on (CSV): one pass of the ordering query
    (which aggregates the whole ledger, so never once per chunk), the per-currency
    amounts read `chunk` customers at a time."""
    repo = LedgerRepository(session)
    reporting = options.reporting_currency.lower()
    after = _after(sort, cursor)  # here, not in the generator: a bad cursor is a 422

    def rows() -> Iterator[CustomerSummaryOut]:
        found = repo.customer_summaries(
            account, reporting, search=search, sort=sort, active=active, after=after,
            limit=None,
        )  # fmt: skip
        for i in range(0, len(found), chunk):
            yield from _summaries(repo, account, reporting, found[i : i + chunk])

    return rows()


@dataclass(frozen=True, slots=True)
class SubscriptionFilter:
    account: str = ""
    customer_id: str | None = None
    status: str | None = None
    plan: str | None = None


def _subscription_after(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        (after,) = pagination.decode_cursor(cursor, str)
    except pagination.InvalidCursor as exc:
        raise invalid_parameter("cursor", str(exc)) from None
    return after


def list_subscriptions(
    session: Session, f: SubscriptionFilter, cursor: str | None, limit: int
) -> SubscriptionsPage:
    rows = LedgerRepository(session).subscriptions_page(
        f.account, customer_id=f.customer_id, status=f.status, plan=f.plan,
        after=_subscription_after(cursor), limit=limit + 1,
    )  # fmt: skip
    more = len(rows) > limit
    page = [_subscription_out(s) for s in rows[:limit]]
    return SubscriptionsPage(
        account=f.account,
        as_of=as_of(session, f.account),
        data=page,
        has_more=more,
        next_cursor=pagination.encode_cursor(page[-1].subscription_id) if more else None,
    )


def all_subscriptions(
    session: Session, f: SubscriptionFilter, cursor: str | None, chunk: int = CSV_CHUNK
) -> Iterator[SubscriptionOut]:
    """Every matching subscription from `cursor` on, in keyset batches (CSV exports). The
    cursor is checked at once (a 422 before the body starts), the rows read as written."""
    first = _subscription_after(cursor)
    repo = LedgerRepository(session)

    def rows(after: str | None) -> Iterator[SubscriptionOut]:
        while True:
            batch = repo.subscriptions_page(
                f.account, customer_id=f.customer_id, status=f.status, plan=f.plan,
                after=after, limit=chunk,
            )  # fmt: skip
            yield from map(_subscription_out, batch)
            if len(batch) < chunk:
                return
            after = batch[-1].subscription_id

    return rows(first)


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
        event_ids=StripeEventRepository(session).subscription_event_ids(account, subscription_id),
    )


def apply_fx_rates(session: Session, options: LedgerOptions, quotes: list[FxQuote]) -> int:
    """Store rates and recompute the reporting amounts they affect (never the movements
    themselves: FX-only changes are not movements). Returns rows recomputed.

    Raises FxRateError (nothing stored) for a rate `check_quotes` refuses."""
    check_quotes(quotes, options.reporting_currency)
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
        LedgerRepository(session).mark_changed(acct, sorted(days))
    session.flush()
    return len(rows)


@dataclass(frozen=True, slots=True)
class FxSyncResult:
    feed: str  # the ECB file read
    latest: date  # the newest day it publishes
    stored: int  # rates new or changed (0: the database already held the feed)
    recomputed: int  # ledger rows whose reporting amounts were recomputed


def _needed_from(repo: LedgerRepository, reporting: str, today: date, since: date | None) -> date:
    return since or repo.earliest_foreign_day(reporting) or today


def ecb_feed_needed(
    session: Session, options: LedgerOptions, *, today: date, since: date | None = None
) -> str:
    """Which ECB feed holds what the database lacks: the 90-day one when all of it is
    recent (a scheduled run), the whole history otherwise (a first run, an old `since`).
    Rates from `since` on are wanted, by default from the ledger's first row in another
    currency than the reporting one."""
    repo = LedgerRepository(session)
    reporting = options.reporting_currency.lower()
    first, last = repo.fx_day_range(reporting)
    needed = _needed_from(repo, reporting, today, since)
    # Held rates are taken to be contiguous: what is missing is before the first or
    # after the last.
    missing_from = needed if first is None or last is None or first > needed else last
    recent = missing_from >= today - timedelta(days=ecb.RECENT_DAYS)
    return ecb.HIST_90D if recent else ecb.HIST


def store_ecb_rates(
    session: Session,
    options: LedgerOptions,
    eur: ecb.EurRates,
    *,
    feed: str,
    today: date,
    since: date | None = None,
) -> FxSyncResult:
    """Store, as cross rates to the reporting currency, the feed's rates from `since` on
    (as in `ecb_feed_needed`) that the database lacks or holds with another value; their
    reporting amounts are recomputed and their days marked for the metrics refresh, as
    `apply_fx_rates` does. The same feed again stores nothing and marks nothing.

    Raises EcbError (the reporting currency is not published) or FxRateError, having
    stored nothing."""
    repo = LedgerRepository(session)
    reporting = options.reporting_currency.lower()
    if reporting != "eur" and not any(reporting in rates for rates in eur.values()):
        published = sorted({c.upper() for rates in eur.values() for c in rates} | {"EUR"})
        raise ecb.EcbError(
            f"the ECB publishes no {reporting.upper()} rate; fx-sync needs REPORTING_CURRENCY "
            f"to be one of {', '.join(published)}"
        )
    needed = _needed_from(repo, reporting, today, since)
    # From the last publication on or before `needed` on: the rate that day takes.
    on_or_before = [day for day in eur if day <= needed]
    start = max(on_or_before) if on_or_before else min(eur)
    held = {(r.currency, r.day): Decimal(r.rate) for r in repo.fx_rows(reporting, since=start)}
    quotes = [
        q
        for q in ecb.cross_rates(eur, reporting)
        if q.day >= start and held.get((q.currency, q.day)) != q.rate
    ]
    recomputed = apply_fx_rates(session, options, quotes) if quotes else 0
    return FxSyncResult(feed=feed, latest=max(eur), stored=len(quotes), recomputed=recomputed)


def list_fx_rates(session: Session, options: LedgerOptions) -> FxRatesOut:
    table = LedgerRepository(session).fx_rows(options.reporting_currency)
    return FxRatesOut(
        reporting_currency=options.reporting_currency,
        rates=[FxRateOut(currency=r.currency, day=r.day, rate=r.rate) for r in table],
    )


REBUILD_COMMAND = "churn-ledger rebuild"


def check_reporting_currency(session: Session, options: LedgerOptions) -> None:
    """Refuse to answer from reporting amounts computed in another currency than the
    configured one (REPORTING_CURRENCY changed on an existing ledger): they would read as
    0 with nothing to say why. A full rebuild recomputes them and records the currency."""
    found = LedgerRepository(session).ledger_reporting_currency()
    wanted = options.reporting_currency.lower()
    if found is not None and found != wanted:
        raise ApiError(
            503,
            "reporting_currency_changed",
            f"the ledger's reporting amounts are in {found.upper()} but REPORTING_CURRENCY "
            f"is {wanted.upper()}: run `{REBUILD_COMMAND}` (then the metrics refresh) to "
            "recompute them, or set REPORTING_CURRENCY back",
            command=REBUILD_COMMAND,
            ledger_currency=found,
            reporting_currency=wanted,
        )


def record_reporting_currency(session: Session, options: LedgerOptions) -> None:
    """After a full rebuild: every reporting amount is now in the configured currency."""
    LedgerRepository(session).set_ledger_reporting_currency(options.reporting_currency)
    session.flush()
