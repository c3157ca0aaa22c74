"""Closed months and restatements: finance closes a month, its published figures are
kept, and a refresh that later finds them changed (a late or backdated event) records
what changed, with the events behind it, and alerts (`period.restated`).

A restatement is one per closed month and refresh that changed it, listing every figure
that moved (old → new) and the Stripe events received after the close that touched the
month: those in the month's ledger rows, or else the late events of the customers with
rows in it, less those an earlier restatement of the month already named.

Figures "as known on" a day come from what was published: the close's snapshot with the
restatements detected up to that day applied. Only closed months have that history;
the ledger is rewritten in place and keeps no earlier version of itself.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from sqlalchemy.orm import Session

from service.kit import periods as P
from service.kit.errors import ApiError
from service.kit.errors import invalid_parameter as invalid
from service.metrics.models import ClosedPeriod, Restatement
from service.metrics.repository import DAILY_SUMS, MetricsRepository, PeriodsRepository
from service.metrics.selection import MetricsQuery, Selection
from service.metrics.series import PeriodValues
from service.payments.alerts import enqueue_alert

# The figures kept per closed month: every movement-answer figure and the customers at
# both ends (MRR, ARR, customers and ARPA derive from them).
FIGURES = ("mrr_start", "mrr_end", "customers_start", "customers_end", *DAILY_SUMS)
RESTATED = "period.restated"


def month_label(period: date) -> str:
    return period.strftime("%Y-%m")


def parse_month(text: str) -> date:
    """'2026-03' -> 2026-03-01; a 422 naming `period` otherwise."""
    try:
        year, month = text.split("-")
        if len(year) != 4 or len(month) != 2:
            raise ValueError(text)
        return date(int(year), int(month), 1)
    except ValueError:
        raise invalid("period", "a month as YYYY-MM, e.g. 2026-03") from None


def figures_of(p: PeriodValues) -> dict[str, int]:
    return {
        "mrr_start": p.mrr_start, "mrr_end": p.mrr_end, "customers_start": p.customers_start,
        "customers_end": p.customers_end, **{k: int(p.flows[k]) for k in DAILY_SUMS},
    }  # fmt: skip


def month_figures(
    session: Session, account: str, currency: str, period: date, today: date
) -> tuple[dict[str, int], int | None]:
    """The month's figures as the metric tables hold them now (whole account, no
    filters), and the tables' `as_of`."""
    q = MetricsQuery(
        account=account, currency=currency, default_currency=currency, start=period,
        end=P.shift(period, P.Interval.month), interval=P.Interval.month, today=today,
    )  # fmt: skip
    sel = Selection(session, q, P.Interval.month)
    values, _ = sel.values()
    return figures_of(values[0]), sel.fresh.as_of


def close(session: Session, account: str, currency: str, month: str, today: date) -> ClosedPeriod:
    """Close a month that is over: refresh the account's tables (so what is frozen is
    current), then keep the month's figures. 409 when closed already. Flushes only."""
    from service.metrics.refresh import refresh_account  # refresh calls back into here

    period = parse_month(month)
    if P.shift(period, P.Interval.month) > today:
        raise invalid("period", f"{month} is not over yet (today is {today.isoformat()})")
    if period < date(1970, 1, 1):
        raise invalid("period", "before 1970")
    repo = PeriodsRepository(session)
    if repo.get(account, currency, period) is not None:
        raise ApiError(409, "period_closed", f"{month} is closed already", period=month)
    refresh_account(session, account, today=today)
    # A concurrent close of the same month waited for the refresh lock: look again.
    if repo.get(account, currency, period) is not None:
        raise ApiError(409, "period_closed", f"{month} is closed already", period=month)
    figures, as_of = month_figures(session, account, currency, period, today)
    row = ClosedPeriod(
        account=account, reporting_currency=currency, period=period,
        closed_at=datetime.now(UTC), as_of=as_of, figures_at_close=figures,
        figures=dict(figures),
    )  # fmt: skip
    repo.add(row)
    return row


def restate(session: Session, account: str, today: date) -> list[Restatement]:
    """Called by every refresh once the tables are current: a restatement (and an alert)
    for each closed month whose figures the refresh changed. Flushes only."""
    repo = PeriodsRepository(session)
    closed = repo.closed(account)
    if not closed:
        return []
    # Months in a reporting currency the tables no longer hold are history as they were.
    computed = MetricsRepository(session).reporting_currencies(account)
    found = []
    for cp in closed:
        if cp.reporting_currency not in computed:
            continue
        now, _ = month_figures(session, account, cp.reporting_currency, cp.period, today)
        changes = {
            m: [cp.figures.get(m, 0), v] for m, v in now.items() if cp.figures.get(m, 0) != v
        }
        if not changes:
            continue
        detected = datetime.now(UTC)
        row = Restatement(
            account=account, reporting_currency=cp.reporting_currency, period=cp.period,
            detected_at=detected, changes=changes, event_ids=_causes(repo, cp),
        )  # fmt: skip
        repo.add(row)
        cp.figures = now  # a new dict: JSON columns see assignment, not mutation
        enqueue_alert(
            session, account, f"restated:{row.id}", RESTATED, int(detected.timestamp()),
            restatement_payload(row),
        )  # fmt: skip
        found.append(row)
    session.flush()
    return found


def _causes(repo: PeriodsRepository, cp: ClosedPeriod) -> list[str]:
    end = P.shift(cp.period, P.Interval.month)
    rows = repo.month_rows(cp.account, cp.reporting_currency, cp.period, end)
    in_rows = {i for _, ids in rows for i in ids}
    late = repo.events_received_after(cp.account, cp.closed_at, sorted({c for c, _ in rows}))
    named = {i for r in repo.restatements(cp.account, cp.reporting_currency, cp.period)
             for i in r.event_ids}  # fmt: skip
    fresh = [i for i, _ in late if i not in named]
    direct = [i for i in fresh if i in in_rows]
    return direct or fresh


def restatement_payload(r: Restatement) -> dict[str, object]:
    return {
        "restatement_id": r.id,
        "period": month_label(r.period),
        "currency": r.reporting_currency,
        "changes": [{"metric": m, "old": o, "new": n} for m, (o, n) in sorted(r.changes.items())],
        "event_ids": r.event_ids,
    }


def known_until(when: date | datetime) -> datetime:
    """The first instant not known yet "as known on" `when`: a day includes all of it
    (UTC), an instant itself."""
    if isinstance(when, datetime):
        return _aware(when).astimezone(UTC) + timedelta(microseconds=1)
    return datetime.combine(when + timedelta(days=1), datetime.min.time(), UTC)


def known_on(
    session: Session, account: str, currency: str, period: date, when: date | datetime
) -> dict[str, int] | None:
    """The month's figures as published on `when`; None when it was not closed by then."""
    repo = PeriodsRepository(session)
    cp = repo.get(account, currency, period)
    until = known_until(when)
    if cp is None or _aware(cp.closed_at) >= until:
        return None
    figures = dict(cp.figures_at_close)
    for r in repo.restatements(account, currency, period):
        if _aware(r.detected_at) < until:
            figures.update({m: new for m, (_, new) in r.changes.items()})
    return figures


def _aware(value: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; they are UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def apply_known(sel: Selection, values: list[PeriodValues], day: date | datetime) -> None:
    """Replace each period's figures with those published on `day`: whole months of the
    whole account only, each closed by then (a 422 naming the first that was not)."""
    q = sel.q
    if sel.interval is not P.Interval.month:
        raise invalid("as_known_on", "answers closed months: use interval=month")
    if (
        q.segment_by
        or q.metadata
        or any(f is not None for f in (q.plan, q.billing_interval, q.currency_code))
    ):
        raise invalid("as_known_on", "closed months keep the whole account's figures only")
    for p in values:
        known = known_on(sel.repo.session, q.account, sel.currency, p.start, day)
        if known is None:
            raise invalid(
                "as_known_on",
                f"{month_label(p.start)} was not closed by {day.isoformat()}: only closed "
                "months keep their figures as published (GET /v1/periods)",
            )
        p.mrr_start, p.mrr_end = known["mrr_start"], known["mrr_end"]
        p.customers_start, p.customers_end = known["customers_start"], known["customers_end"]
        for k in DAILY_SUMS:
            p.flows[k] = known.get(k, 0)
