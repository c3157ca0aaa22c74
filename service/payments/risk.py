"""MRR at risk at an instant: the MRR of subscriptions with an open failed-payment episode."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from service.kit.time import utc_day
from service.ledger.fx import FxTable
from service.payments.repository import PaymentRepository


@dataclass(frozen=True, slots=True)
class AtRisk:
    amount: int  # minor units of the reporting currency
    subscriptions: int  # with MRR > 0 and an open episode
    unconverted: int  # of those, without an FX rate (left out of `amount`)


def mrr_at_risk(session: Session, account: str, at: int, fx: FxTable) -> AtRisk:
    """As of just before unix time `at`. The subscription's MRR comes from the ledger (a
    past_due subscription still counts there, design §3; an unpaid one does not)."""
    repo = PaymentRepository(session)
    subscriptions = repo.subscriptions_at_risk(account, at)
    day = utc_day(at - 1)
    amount = counted = unconverted = 0
    for mrr, currency in repo.mrr_before(account, subscriptions, at).values():
        if mrr <= 0:
            continue
        converted = fx.to_reporting(mrr, currency, day)
        counted += 1
        if converted is None:
            unconverted += 1
        else:
            amount += converted
    return AtRisk(amount, counted, unconverted)
