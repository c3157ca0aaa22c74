"""Metric rules (design §5): which rows a query selects, and each metric from the sums.

Reads only the tables `service/metrics/refresh.py` keeps fresh (and the ledger for /v1/movements);
services never write here.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from fractions import Fraction

from sqlalchemy.orm import Session

from service.kit import pagination
from service.kit import periods as P
from service.kit.errors import ApiError
from service.kit.money import display
from service.ledger.models import MrrMovement
from service.ledger.service import movement_out
from service.metrics import closing
from service.metrics import explain as X
from service.metrics.models import ClosedPeriod, Restatement
from service.metrics.repository import MetricsRepository, PeriodsRepository
from service.metrics.schemas import (
    ChurnAnswer,
    ChurnRow,
    ClosedPeriodOut,
    ClosedPeriodsPage,
    CohortRow,
    CohortsAnswer,
    ExplainAnswer,
    ExplainedCustomer,
    ExplainedRow,
    MovementsAnswer,
    MovementsPage,
    MovementsRow,
    MrrAnswer,
    MrrRow,
    PeriodsFreshness,
    ReasonRow,
    ReasonsAnswer,
    RestatedFigure,
    RestatementOut,
    RestatementsPage,
)
from service.metrics.selection import ChurnOptions, MetricsQuery, Selection, invalid
from service.metrics.series import (
    PeriodValues,
    as_float,
    div_half_up,
    rate,
    ratio,
    round_half_up,
)


def mrr(session: Session, q: MetricsQuery, as_known_on: date | datetime | None = None) -> MrrAnswer:
    sel = Selection(session, q, q.interval)
    values, unconverted = sel.values()
    if as_known_on is not None:
        closing.apply_known(sel, values, as_known_on)
    rows = []
    for p in values:
        arpa = ratio(p.mrr_end, p.customers_end)
        rows.append(
            MrrRow(
                period_start=p.start,
                period_end=p.end,
                segment=p.segment,
                segment_label=sel.segment_label(p.segment),
                mrr=sel.money(p.mrr_end),
                arr=sel.money(12 * p.mrr_end),
                customers=p.customers_end,
                arpa=None if arpa is None else sel.money(round_half_up(arpa)),
            )
        )
    return MrrAnswer(
        **sel.header(unconverted), interval=q.interval, as_known_on=as_known_on, data=rows
    )


def movements(
    session: Session, q: MetricsQuery, as_known_on: date | datetime | None = None
) -> MovementsAnswer:
    sel = Selection(session, q, q.interval)
    values, unconverted = sel.values()
    if as_known_on is not None:
        closing.apply_known(sel, values, as_known_on)
    rows = [
        MovementsRow(
            period_start=p.start,
            period_end=p.end,
            segment=p.segment,
            segment_label=sel.segment_label(p.segment),
            mrr_start=sel.money(p.mrr_start),
            mrr_end=sel.money(p.mrr_end),
            **{
                k: sel.money(p.flows[k])
                for k in (
                    "new_mrr",
                    "expansion_mrr",
                    "contraction_mrr",
                    "churned_mrr",
                    "reactivation_mrr",
                )
            },
            **{
                k: p.flows[k]
                for k in (
                    "new_customers",
                    "reactivated_customers",
                    "churned_customers",
                    "expansions",
                    "contractions",
                    "unconverted_movements",
                )
            },
        )
        for p in values
    ]
    return MovementsAnswer(
        **sel.header(unconverted), interval=q.interval, as_known_on=as_known_on, data=rows
    )


def churn(
    session: Session,
    q: MetricsQuery,
    options: ChurnOptions,
    as_known_on: date | datetime | None = None,
) -> ChurnAnswer:
    if options.good_below > options.high_above:
        raise invalid("churn_high_above", "must not be below churn_good_below")
    sel = Selection(session, q, q.interval)
    values, unconverted = sel.values()
    if as_known_on is not None:
        # The published base figures, then the live rows' own arithmetic on them.
        closing.apply_known(sel, values, as_known_on, churn=True)
    limits = _Limits.of(options)
    rows = [_churn_row(sel, p, limits) for p in values]
    return ChurnAnswer(
        **sel.header(unconverted),
        interval=q.interval,
        as_known_on=as_known_on,
        churn_good_below=options.good_below,
        churn_high_above=options.high_above,
        gross_margin=options.gross_margin,
        data=rows,
    )


@dataclass(frozen=True, slots=True)
class _Limits:
    """The options as exact fractions, once per answer rather than per row."""

    good: Fraction
    high: Fraction
    margin: Fraction | int

    @classmethod
    def of(cls, options: ChurnOptions) -> _Limits:
        margin = Fraction(str(options.gross_margin)) if options.gross_margin else 1
        return cls(Fraction(str(options.good_below)), Fraction(str(options.high_above)), margin)


def _churn_row(sel: Selection, p: PeriodValues, limits: _Limits) -> ChurnRow:
    # Rates of integers go straight to float (`rate`); only the hazard's monthly
    # equivalent and LTV need exact fractions.
    f = p.flows
    losses = -(f["churned_mrr"] + f["contraction_mrr"])
    gains = f["expansion_mrr"] + f["reactivation_mrr"]
    hazard = ratio(f["churned_customers"], p.customer_days)
    monthly = None if hazard is None else 1 - (1 - hazard) ** 30
    arpa = None
    ltv = None
    if p.customers_end > 0:
        arpa = sel.money(div_half_up(p.mrr_end, p.customers_end))
        if monthly:
            exact = Fraction(p.mrr_end, p.customers_end)
            ltv = sel.money(round_half_up(exact / monthly * limits.margin))
    level = None
    if monthly is not None:
        good, high = limits.good, limits.high
        level = "good" if monthly < good else "high" if monthly > high else "normal"
    start = p.mrr_start
    return ChurnRow(
        period_start=p.start, period_end=p.end, segment=p.segment,
        segment_label=sel.segment_label(p.segment),
        mrr_start=sel.money(start), mrr_end=sel.money(p.mrr_end),
        customers_start=p.customers_start, customers_end=p.customers_end,
        customers_gained=p.customers_gained, customers_lost=p.customers_lost,
        customer_churn_rate=rate(p.customers_lost, p.customers_start),
        customer_retention_rate=rate(p.customers_end - p.customers_gained, p.customers_start),
        gross_mrr_churn_rate=rate(losses, start),
        net_mrr_churn_rate=rate(losses - gains, start),
        expansion_rate=rate(gains, start),
        nrr=rate(start - losses + gains, start),
        grr=rate(start - losses, start),
        quick_ratio=rate(f["new_mrr"] + gains, losses),
        churned_customers=f["churned_customers"], customer_days=p.customer_days,
        churn_hazard=as_float(hazard), monthly_churn_rate=as_float(monthly),
        arpa=arpa, ltv=ltv,
        negative_churn=None if start <= 0 else losses - gains < 0, churn_level=level,
    )  # fmt: skip


def churn_reasons(
    session: Session, q: MetricsQuery, as_known_on: date | datetime | None = None
) -> ReasonsAnswer:
    sel = Selection(session, q, q.interval)
    _, unconverted = sel.values()
    sums = _reason_sums(sel) if as_known_on is None else closing.known_reasons(sel, as_known_on)
    rows = [
        ReasonRow(
            period_start=sel.periods[i][0],
            period_end=sel.periods[i][1],
            segment=label,
            segment_label=sel.segment_label(label),
            reason=reason,
            feedback=feedback or None,  # type: ignore[arg-type]
            churns=count,
            churned_mrr=sel.money(amount),
        )
        for (i, label, reason, feedback), (count, amount) in sorted(
            sums.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2], kv[0][3])
        )
    ]
    return ReasonsAnswer(
        **sel.header(unconverted), interval=q.interval, as_known_on=as_known_on, data=rows
    )


def _reason_sums(sel: Selection) -> closing.ReasonSums:
    q = sel.q
    start, end = sel.bounds
    starts = [s for s, _ in sel.periods]
    sums: closing.ReasonSums = defaultdict(lambda: [0, 0])
    for r in sel.repo.churn_reasons(q.account, sel.currency, sel.segment_keys, start, end):
        index = _period_index(starts, r.day)
        if sel.includes(r.segment) and index >= 0:  # none when every period is future
            total = sums[(index, sel.label(r.segment), r.reason, r.feedback)]
            total[0] += r.churns
            total[1] += r.churned_mrr
    return sums


def _period_index(starts: list[date], day: date) -> int:
    return bisect.bisect_right(starts, day) - 1


def cohorts(
    session: Session, q: MetricsQuery, as_known_on: date | datetime | None = None
) -> CohortsAnswer:
    sel = Selection(session, q, P.Interval.month)
    sums = _cohort_sums(sel) if as_known_on is None else closing.known_cohorts(sel, as_known_on)
    rows = [
        CohortRow(
            cohort_month=cohort,
            months_since_start=n,
            month=P.shift(cohort, P.Interval.month, n),
            segment=label,
            segment_label=sel.segment_label(label),
            cohort_customers=size,
            initial_mrr=sel.money(initial),
            active_customers=active,
            logo_retention=as_float(ratio(active, size)),
            cohort_mrr=sel.money(mrr_now),
            mrr_retention=as_float(ratio(mrr_now, initial)),
        )
        for (cohort, n, label), (size, initial, active, mrr_now) in sorted(
            sums.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")
        )
    ]
    _, unconverted = sel.values()
    return CohortsAnswer(**sel.header(unconverted), as_known_on=as_known_on, data=rows)


def _cohort_sums(sel: Selection) -> closing.CohortSums:
    q = sel.q
    start, end = sel.bounds
    sums: closing.CohortSums = defaultdict(lambda: [0, 0, 0, 0])
    for r in sel.repo.cohorts(q.account, sel.currency, sel.segment_keys, start, end):
        if sel.includes(r.segment):
            total = sums[(r.cohort_month, r.months_since_start, sel.label(r.segment))]
            for i, v in enumerate(
                (r.cohort_customers, r.initial_mrr, r.active_customers, r.cohort_mrr)
            ):
                total[i] += v
    return sums


# --- explain: the rows behind one figure ---------------------------------------------------


def _reported(p: PeriodValues, metric: str) -> int:
    if metric in ("mrr", "mrr_end"):
        return p.mrr_end
    if metric == "mrr_start":
        return p.mrr_start
    if metric in ("customers", "customers_end"):
        return p.customers_end
    if metric == "customers_start":
        return p.customers_start
    return p.flows[metric]


def explain(session: Session, q: MetricsQuery, metric: str) -> ExplainAnswer:
    """The customers and ledger rows behind `metric` in the one period of `q`, selected
    as the metric tables select them (reporting currency, unconverted series left out,
    segment filters), so that they sum to the figure /v1/metrics/* report."""
    if metric not in X.EXPLAINABLE:
        raise ApiError(
            422,
            "invalid_request",
            f"invalid parameter 'metric': {metric!r} is not a sum of ledger rows; "
            f"explainable: {', '.join(X.EXPLAINABLE)}",
            param="metric",
            explainable=list(X.EXPLAINABLE),
        )
    sel = Selection(session, q, q.interval)
    if not sel.periods:
        raise invalid("period_start", "the period starts after today: nothing known yet")
    values, unconverted = sel.values()
    period = values[0]
    start, end = period.start, period.end
    boundary = start if X.at_start(metric) else end
    rows, states = sel.repo.explain_ledger(
        q.account, sel.currency, None if X.is_state(metric) else start, boundary
    )
    found = X.explain_ledger(metric, rows, states, start, end, sel.matches)
    total = sum(c.value for c in found)
    kind = X.kind_of(metric)
    return ExplainAnswer(
        **sel.header(unconverted),
        metric=metric,
        kind=kind,
        interval=q.interval,
        period_start=start,
        period_end=end,
        value=total,
        display=display(total, sel.currency) if kind == "amount" else None,
        reported=_reported(period, metric),
        customers=len(found),
        rows=sum(len(c.contributions) for c in found),
        data=[
            ExplainedCustomer(
                customer_id=c.customer_id,
                value=c.value,
                rows=[
                    ExplainedRow(**movement_out(x.row).model_dump(), value=x.value)
                    for x in c.contributions
                ],
            )
            for c in found
        ],
    )


# --- the ledger rows ----------------------------------------------------------------------


def encode_cursor(day: date, row_id: int) -> str:
    return pagination.encode_cursor(day, row_id)


def decode_cursor(cursor: str) -> tuple[date, int]:
    try:
        day, row_id = pagination.decode_cursor(cursor, date, int)
    except pagination.InvalidCursor:
        raise invalid("cursor", "not a cursor from a previous page") from None
    return day, row_id


# A full export reads the ledger this many rows at a time (keyset, so each batch is an
# index range scan however deep into the ledger it is).
EXPORT_BATCH = 2000


@dataclass(frozen=True, slots=True)
class LedgerFilter:
    account: str
    start: date | None
    end: date | None
    movement: str | None
    customer: str | None
    currency_code: str | None


def _ledger_batch(
    repo: MetricsRepository, f: LedgerFilter, after: tuple[date, int] | None, limit: int
) -> Sequence[MrrMovement]:
    return repo.movements(
        f.account, start=f.start, end=f.end, movement=f.movement, customer=f.customer,
        currency_code=f.currency_code.lower() if f.currency_code else None, after=after,
        limit=limit,
    )  # fmt: skip


def all_ledger_rows(
    session: Session, f: LedgerFilter, cursor: str | None, batch: int = EXPORT_BATCH
) -> Iterator[MrrMovement]:
    """Every matching ledger row from `cursor` on, oldest first (CSV exports). The cursor
    is checked at once (a 422 before the body starts), the rows read as written."""
    repo = MetricsRepository(session)
    first = decode_cursor(cursor) if cursor else None

    def rows(after: tuple[date, int] | None) -> Iterator[MrrMovement]:
        while True:
            found = _ledger_batch(repo, f, after, batch)
            yield from found
            if len(found) < batch:
                return
            after = (found[-1].day, found[-1].id)

    return rows(first)


def ledger_as_of(session: Session, account: str) -> datetime | None:
    newest = MetricsRepository(session).newest_handled_event(account)
    return datetime.fromtimestamp(newest, UTC) if newest else None


def ledger_rows(
    session: Session,
    account: str,
    *,
    start: date | None,
    end: date | None,
    movement: str | None,
    customer: str | None,
    currency_code: str | None,
    cursor: str | None,
    limit: int,
) -> MovementsPage:
    repo = MetricsRepository(session)
    after = decode_cursor(cursor) if cursor else None
    f = LedgerFilter(account, start, end, movement, customer, currency_code)
    rows = _ledger_batch(repo, f, after, limit + 1)
    page, more = rows[:limit], len(rows) > limit
    return MovementsPage(
        account=account,
        as_of=ledger_as_of(session, account),
        data=[movement_out(m) for m in page],
        has_more=more,
        next_cursor=encode_cursor(page[-1].day, page[-1].id) if more else None,
    )


# --- closed months and restatements ---------------------------------------------------------


def _closed_out(cp: ClosedPeriod, restated: int) -> ClosedPeriodOut:
    return ClosedPeriodOut(
        account=cp.account, period=closing.month_label(cp.period), period_start=cp.period,
        period_end=P.shift(cp.period, P.Interval.month), currency=cp.reporting_currency,
        closed_at=cp.closed_at,
        as_of=datetime.fromtimestamp(cp.as_of, UTC) if cp.as_of else None,
        figures_at_close=cp.figures_at_close, figures=cp.figures, restatements=restated,
    )  # fmt: skip


def close_period(
    session: Session, account: str, currency: str, month: str, today: date
) -> ClosedPeriodOut:
    return _closed_out(closing.close(session, account, currency.lower(), month, today), 0)


def _freshness(session: Session, account: str) -> dict[str, object]:
    """The metric tables' freshness: their refreshes keep `figures` and find restatements."""
    f = MetricsRepository(session).freshness(account)
    return {
        "account": account,
        "as_of": datetime.fromtimestamp(f.as_of, UTC) if f.as_of else None,
        "refreshed_at": f.refreshed_at,
        "stale": f.stale,
        "stale_seconds": f.stale_seconds(time.time_ns() // 1_000_000),
    }


def closed_periods(session: Session, account: str) -> ClosedPeriodsPage:
    repo = PeriodsRepository(session)
    counts: dict[tuple[str, date], int] = defaultdict(int)
    for r in repo.restatements(account):
        counts[(r.reporting_currency, r.period)] += 1
    return ClosedPeriodsPage(
        **_freshness(session, account),
        data=[
            _closed_out(cp, counts[(cp.reporting_currency, cp.period)])
            for cp in repo.closed(account)
        ],
    )


def _restatement_out(r: Restatement) -> RestatementOut:
    return RestatementOut(
        id=r.id, account=r.account, period=closing.month_label(r.period),
        currency=r.reporting_currency, detected_at=r.detected_at,
        changes=[RestatedFigure(metric=m, old=o, new=n) for m, (o, n) in sorted(r.changes.items())],
        event_ids=r.event_ids,
    )  # fmt: skip


def restatements(session: Session, account: str, period: str | None) -> RestatementsPage:
    month = closing.parse_month(period) if period else None
    rows = PeriodsRepository(session).restatements(account, period=month)
    return RestatementsPage(
        **_freshness(session, account), data=[_restatement_out(r) for r in rows]
    )


def periods_freshness(session: Session, account: str) -> PeriodsFreshness:
    return PeriodsFreshness(**_freshness(session, account))


def all_restatements(
    session: Session, account: str, period: str | None, batch: int = EXPORT_BATCH
) -> Iterator[RestatementOut]:
    """Every restatement, oldest first, read in keyset batches (CSV exports). The month
    is checked at once: a 422 before the body starts."""
    month = closing.parse_month(period) if period else None
    repo = PeriodsRepository(session)

    def rows() -> Iterator[RestatementOut]:
        after = 0
        while True:
            found = repo.restatements(account, period=month, after_id=after, limit=batch)
            yield from map(_restatement_out, found)
            if len(found) < batch:
                return
            after = found[-1].id

    return rows()
