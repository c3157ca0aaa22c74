"""GET /v1/metrics/recovery: per period, the episodes that started in it (design §6).

A failure on 28 Dec recovered on 3 Jan counts for December, so failed and recovered line
up. Amounts are converted to the reporting currency at the rate of the episode's first
failure day (one rate per episode, so FX moves never make a recovery rate exceed 1).
MRR at risk is a point-in-time value at each period's end; churned MRR comes from the
ledger's churn rows in the period, split by reason.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy.orm import Session

from service.kit.periods import Interval, periods
from service.kit.time import day_start, utc_day
from service.ledger.fx import FxTable
from service.ledger.models import ChurnReason
from service.ledger.repository import LedgerRepository
from service.ledger.schemas import Money
from service.payments.recovery import EpisodeFacts, Outcomes, summarize
from service.payments.repository import PaymentRepository
from service.payments.risk import mrr_at_risk
from service.payments.schemas import (
    AttemptCount,
    DeclineBreakdown,
    RecoveryOut,
    RecoveryPeriod,
)
from service.settings import LedgerOptions
from service.webhooks.repository import StripeEventRepository


def _facts(
    session: Session, account: str, start: int, end: int, fx: FxTable, missing: set[str]
) -> list[EpisodeFacts]:
    """The episodes started in [start, end); the currencies with no rate go to `missing`."""
    facts = []
    for e in PaymentRepository(session).started_between(account, start, end):
        amount = fx.to_reporting(e.amount_due, e.currency, utc_day(e.first_failure_at))
        if amount is None:
            missing.add(e.currency)
        facts.append(
            EpisodeFacts(
                amount=amount,
                outcome=e.outcome,
                time_to_recover_s=e.time_to_recover_s,
                recovered_on_attempt=e.recovered_on_attempt,
                decline_code=e.decline_code,
            )
        )
    return facts


def _decline(code: str | None, o: Outcomes, cur: str) -> DeclineBreakdown:
    return DeclineBreakdown(
        decline_code=code,
        failed_invoices=o.failed.invoices,
        failed_amount=Money.of(o.failed.amount, cur),
        recovered_invoices=o.recovered.invoices,
        recovered_amount=Money.of(o.recovered.amount, cur),
        lost_invoices=o.lost.invoices,
        recovery_rate_by_count=o.rate_by_count,
        recovery_rate_by_amount=o.rate_by_amount,
    )


def _period(
    session: Session, account: str, start: date, end: date, fx: FxTable, missing: set[str]
) -> RecoveryPeriod:
    cur = fx.reporting
    s = summarize(_facts(session, account, day_start(start), day_start(end), fx, missing))
    t = s.totals
    risk = mrr_at_risk(session, account, day_start(end), fx)
    churned = PaymentRepository(session).churned_mrr(account, cur, start, end)
    declines = sorted(s.by_decline.items(), key=lambda kv: (-kv[1].failed.invoices, kv[0] or ""))
    return RecoveryPeriod(
        period_start=start,
        period_end=end,
        failed_invoices=t.failed.invoices,
        failed_amount=Money.of(t.failed.amount, cur),
        recovered_invoices=t.recovered.invoices,
        recovered_amount=Money.of(t.recovered.amount, cur),
        recovery_rate_by_count=t.rate_by_count,
        recovery_rate_by_amount=t.rate_by_amount,
        open_invoices=t.open.invoices,
        open_amount=Money.of(t.open.amount, cur),
        lost_invoices=t.lost.invoices,
        lost_amount=Money.of(t.lost.amount, cur),
        median_time_to_recover_s=s.median_time_to_recover_s,
        p90_time_to_recover_s=s.p90_time_to_recover_s,
        recovered_on_attempt=[
            AttemptCount(attempt=n, invoices=c.invoices, amount=Money.of(c.amount, cur))
            for n, c in sorted(s.by_attempt.items())
        ],
        mrr_at_risk=Money.of(risk.amount, cur),
        subscriptions_at_risk=risk.subscriptions,
        involuntary_churned_mrr=Money.of(churned.get(ChurnReason.involuntary, 0), cur),
        voluntary_churned_mrr=Money.of(churned.get(ChurnReason.voluntary, 0), cur),
        decline_codes=[_decline(code, o, cur) for code, o in declines],
        unconverted_invoices=s.unconverted,
    )


def recovery_report(
    session: Session,
    options: LedgerOptions,
    *,
    account: str,
    start: date,
    end: date,
    interval: Interval,
    today: date,
) -> RecoveryOut:
    """The whole periods covering [start, end), cut as for every metric (kit.periods)."""
    cut = periods(start, end, interval, today)
    fx = LedgerRepository(session).fx_table(options.reporting_currency)
    as_of = StripeEventRepository(session).newest_handled(account)
    missing: set[str] = set()
    data = [_period(session, account, s, e, fx, missing) for s, e in cut]
    return RecoveryOut(
        account=account,
        currency=fx.reporting,
        interval=interval,
        start=cut[0][0],
        end=cut[-1][1],
        as_of=None if as_of is None else datetime.fromtimestamp(as_of, UTC),
        stale=False,
        unconverted_currencies=sorted(missing),
        data=data,
    )
