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

A close keeps, flat in one dict of integers (so that restatements, GET /v1/periods and
the alerts treat every figure alike):
* the month's movement figures and the customers at both ends (MRR, ARR, customers and
  ARPA derive from them), and its turnover and customer-days (the churn answer);
* each cohort's cell of the month, `cohort:YYYY-MM:<value>`: the month is the one whose
  end the cell describes, so the close of March keeps every cohort's March;
* the churn per reason and feedback, `churn_reason:<reason>:<feedback>:<value>` (feedback
  empty when none). Cohort cells and churn reasons are sparse: an absent key is 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.orm import Session

from service.kit import periods as P
from service.kit.errors import ApiError
from service.kit.errors import invalid_parameter as invalid
from service.metrics.models import ClosedPeriod, Restatement
from service.metrics.repository import (
    COHORT_VALUES,
    DAILY_SUMS,
    PERIOD_SUMS,
    MetricsRepository,
    PeriodsRepository,
)
from service.metrics.selection import MetricsQuery, Selection
from service.metrics.series import PeriodValues
from service.payments.alerts import enqueue_alert

MONTH = P.Interval.month
# What the first closes kept: the movement answer's figures and the customers at both ends.
MOVEMENT_FIGURES = ("mrr_start", "mrr_end", "customers_start", "customers_end", *DAILY_SUMS)
# The month's figures always there, in the order lists show them (the cohort and reason
# keys are sparse, and come after).
FIGURES = (*MOVEMENT_FIGURES, *PERIOD_SUMS)
COHORT = "cohort"
REASON = "churn_reason"
REASON_VALUES = ("churns", "churned_mrr")
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


def keeps_all(figures: dict[str, int]) -> bool:
    """Whether a close kept the churn, cohort and reason figures too: closes before they
    were kept (they came together, with customer_days) hold the movement figures only."""
    return "customer_days" in figures


def cohort_key(cohort: date, value: str) -> str:
    return f"{COHORT}:{month_label(cohort)}:{value}"


def reason_key(reason: str, feedback: str, value: str) -> str:
    return f"{REASON}:{reason}:{feedback}:{value}"


def metric_of(key: str) -> str:
    """The metric a kept figure is a value of: itself, or a cohort cell's or a churn
    reason's value (`cohort:2025-01:cohort_mrr` → `cohort_mrr`)."""
    return key.rsplit(":", 1)[-1] if sparse(key) else key


def sparse(key: str) -> bool:
    """A cohort cell's or churn reason's figure: absent means 0."""
    return key.startswith((COHORT + ":", REASON + ":"))


def cohort_cells(figures: dict[str, int]) -> dict[date, dict[str, int]]:
    """The cohort cells a month's figures hold: cohort month → {value: n}."""
    found: dict[date, dict[str, int]] = defaultdict(dict)
    for key, n in figures.items():
        if key.startswith(COHORT + ":"):
            _, month, value = key.split(":")
            found[date.fromisoformat(month + "-01")][value] = n
    return found


def reason_sums(figures: dict[str, int]) -> dict[tuple[str, str], dict[str, int]]:
    """The churn per (reason, feedback) a month's figures hold: {value: n}."""
    found: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for key, n in figures.items():
        if key.startswith(REASON + ":"):
            # Reasons are ours (no colon); feedback is Stripe's text, whatever it holds.
            head, value = key[len(REASON) + 1 :].rsplit(":", 1)
            reason, feedback = head.split(":", 1)
            found[(reason, feedback)][value] = n
    return found


def figures_of(p: PeriodValues) -> dict[str, int]:
    return {
        "mrr_start": p.mrr_start, "mrr_end": p.mrr_end, "customers_start": p.customers_start,
        "customers_end": p.customers_end, **{k: int(p.flows[k]) for k in DAILY_SUMS},
        **{k: getattr(p, k) for k in PERIOD_SUMS},
    }  # fmt: skip


def month_index(month: date) -> int:
    return 12 * month.year + month.month - 1


def period_figures(
    session: Session, account: str, currency: str, periods: Sequence[date], today: date
) -> tuple[dict[date, dict[str, int]], int | None]:
    """These months' figures as the metric tables hold them now (whole account, no
    filters), and the tables' `as_of`. One read of each table for all of them: every
    refresh compares every closed month."""
    wanted = set(periods)
    first, end = min(wanted), P.shift(max(wanted), MONTH)
    q = MetricsQuery(
        account=account, currency=currency, default_currency=currency, start=first,
        end=end, interval=MONTH, today=today,
    )  # fmt: skip
    sel = Selection(session, q, MONTH)
    values, _ = sel.values()
    found = {p.start: figures_of(p) for p in values if p.start in wanted}
    for day, reason, feedback, *sums in sel.repo.churn_by_day(account, currency, first, end):
        figures = found.get(P.floor(day, MONTH))
        if figures is not None:
            for value, n in zip(REASON_VALUES, sums, strict=True):
                key = reason_key(reason, feedback, value)
                figures[key] = figures.get(key, 0) + int(n)
    for cohort, since, *cell in sel.repo.cohort_cells(account, currency, end):
        figures = found.get(P.shift(cohort, MONTH, since))
        if figures is not None:
            for value, n in zip(COHORT_VALUES, cell, strict=True):
                figures[cohort_key(cohort, value)] = int(n)
    return found, sel.fresh.as_of


def close(session: Session, account: str, currency: str, month: str, today: date) -> ClosedPeriod:
    """Close a month that is over: refresh the account's tables (so what is frozen is
    current), then keep the month's figures. 409 when closed already. Flushes only."""
    from service.metrics.refresh import refresh_account  # refresh calls back into here

    period = parse_month(month)
    if P.shift(period, MONTH) > today:
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
    found, as_of = period_figures(session, account, currency, [period], today)
    figures = found[period]
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
    by_currency: dict[str, list[ClosedPeriod]] = defaultdict(list)
    for cp in closed:
        if cp.reporting_currency in computed:
            by_currency[cp.reporting_currency].append(cp)
    found = []
    for currency, months in by_currency.items():
        current, _ = period_figures(session, account, currency, [m.period for m in months], today)
        for cp in months:
            if cp.period not in current:  # after `today`: nothing to compare yet
                continue
            row = _restated(session, repo, cp, current[cp.period])
            if row is not None:
                found.append(row)
    session.flush()
    return found


def _restated(
    session: Session, repo: PeriodsRepository, cp: ClosedPeriod, now: dict[str, int]
) -> Restatement | None:
    if not keeps_all(cp.figures_at_close):
        # Compared with what the close kept only: a figure it never kept has no "before".
        now = {k: now[k] for k in MOVEMENT_FIGURES}
    # Sparse keys can vanish (a churn moved to another reason): both sides, absent is 0.
    changes = {
        m: [cp.figures.get(m, 0), now.get(m, 0)]
        for m in sorted(cp.figures.keys() | now.keys())
        if cp.figures.get(m, 0) != now.get(m, 0)
    }
    if not changes:
        return None
    detected = datetime.now(UTC)
    row = Restatement(
        account=cp.account, reporting_currency=cp.reporting_currency, period=cp.period,
        detected_at=detected, changes=changes, event_ids=_causes(repo, cp),
    )  # fmt: skip
    repo.add(row)
    cp.figures = now  # a new dict: JSON columns see assignment, not mutation
    enqueue_alert(
        session, cp.account, f"restated:{row.id}", RESTATED, int(detected.timestamp()),
        restatement_payload(row),
    )  # fmt: skip
    return row


def _causes(repo: PeriodsRepository, cp: ClosedPeriod) -> list[str]:
    """The events received after the close behind a month's change, not named by an
    earlier restatement of it: those on the month's own ledger rows, else those on the
    rows before it (a backdated change in an earlier month moves this one's MRR at its
    start and end, and its counts), else any late event of a customer with rows up to the
    month's end."""
    end = P.shift(cp.period, P.Interval.month)
    customers = repo.customers_with_events_after(cp.account, cp.closed_at)
    rows = repo.rows_until(cp.account, cp.reporting_currency, end, customers)
    in_month = {i for _, day, ids in rows if day >= cp.period for i in ids}
    before = {i for _, _, ids in rows for i in ids}
    late = repo.events_received_after(cp.account, cp.closed_at, sorted({c for c, _, _ in rows}))
    named = {i for r in repo.restatements(cp.account, cp.reporting_currency, cp.period)
             for i in r.event_ids}  # fmt: skip
    fresh = [i for i, _ in late if i not in named]
    return [i for i in fresh if i in in_month] or [i for i in fresh if i in before] or fresh


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


def published(
    session: Session, account: str, currency: str, when: date | datetime
) -> dict[date, dict[str, int]]:
    """Each month closed by `when`, with its figures as published then: the close's, with
    the restatements detected by then applied in order."""
    repo = PeriodsRepository(session)
    until = known_until(when)
    found = {
        cp.period: dict(cp.figures_at_close)
        for cp in repo.closed(account, currency)
        if _aware(cp.closed_at) < until
    }
    for r in repo.restatements(account, currency):
        if r.period in found and _aware(r.detected_at) < until:
            found[r.period].update({m: new for m, (_, new) in r.changes.items()})
    return found


def _aware(value: datetime) -> datetime:
    # SQLite hands timestamps back without their zone; they are UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _known(
    sel: Selection, day: date | datetime, months: Sequence[date], kept: str | None
) -> dict[date, dict[str, int]]:
    """The months published on `day`, for a whole-account monthly query whose `months`
    were all closed by then: a 422 naming `as_known_on` otherwise. `kept` names what the
    answer needs beyond the movement figures (closes before it was kept lack it)."""
    q = sel.q
    if sel.interval is not MONTH:
        raise invalid("as_known_on", "answers closed months: use interval=month")
    if (
        q.segment_by
        or q.metadata
        or any(f is not None for f in (q.plan, q.billing_interval, q.currency_code))
    ):
        raise invalid("as_known_on", "closed months keep the whole account's figures only")
    found = published(sel.repo.session, q.account, sel.currency, day)
    for month in months:
        figures = found.get(month)
        if figures is None:
            raise invalid(
                "as_known_on",
                f"{month_label(month)} was not closed by {day.isoformat()}: only closed "
                "months keep their figures as published (GET /v1/periods)",
            )
        if kept is not None and not keeps_all(figures):
            raise invalid(
                "as_known_on",
                f"{month_label(month)} was closed before closes kept its {kept}: only its "
                "movement figures are kept (/v1/metrics/mrr and /movements answer them)",
            )
    return found


def apply_known(
    sel: Selection, values: list[PeriodValues], day: date | datetime, *, churn: bool = False
) -> None:
    """Replace each period's figures with those published on `day`: whole months of the
    whole account only, each closed by then (a 422 naming the first that was not).
    `churn`: the turnover and customer-days too, which the churn rates need."""
    found = _known(sel, day, [p.start for p in values], "churn figures" if churn else None)
    for p in values:
        known = found[p.start]
        p.mrr_start, p.mrr_end = known["mrr_start"], known["mrr_end"]
        p.customers_start, p.customers_end = known["customers_start"], known["customers_end"]
        for k in DAILY_SUMS:
            p.flows[k] = known.get(k, 0)
        if churn:
            for k in PERIOD_SUMS:
                setattr(p, k, known[k])


ReasonSums = dict[tuple[int, str | None, str, str], list[int]]
CohortSums = dict[tuple[date, int, str | None], list[int]]


def known_reasons(sel: Selection, day: date | datetime) -> ReasonSums:
    """The churn per period, reason and feedback as published on `day`, keyed as the
    churn-reasons answer sums it: (period index, segment label, reason, feedback)."""
    starts = [s for s, _ in sel.periods]
    found = _known(sel, day, starts, "churn reasons")
    sums: ReasonSums = {}
    for i, start in enumerate(starts):
        for (reason, feedback), v in reason_sums(found[start]).items():
            churns, amount = (v.get(k, 0) for k in REASON_VALUES)
            if churns or amount:  # a restatement that moved a churn away leaves zeros
                sums[(i, None, reason, feedback)] = [churns, amount]
    return sums


def known_cohorts(sel: Selection, day: date | datetime) -> CohortSums:
    """The cohort cells as published on `day`, keyed as the cohorts answer sums them:
    (cohort month, months since start, segment label). The selected cohort months must
    have been closed by then (a 422 otherwise); each cell is its month's, so a cohort's
    cells stop where the months closed by then stop (the current month is never closed),
    and a month not closed then, or closed before closes kept cohorts, has no cells."""
    cohorts = [s for s, _ in sel.periods]
    found = _known(sel, day, cohorts, "cohort cells")
    wanted = set(cohorts)
    sums: CohortSums = {}
    for month, figures in found.items():
        if not keeps_all(figures):
            continue
        for cohort, cell in cohort_cells(figures).items():
            values = [cell.get(k, 0) for k in COHORT_VALUES]
            if cohort in wanted and any(values):
                sums[(cohort, month_index(month) - month_index(cohort), None)] = values
    return sums
