"""What /v1/failed-payments and /v1/metrics/recovery answer (design §6, §7)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, Field, PlainSerializer

from service.kit.periods import Interval
from service.kit.time import UtcDateTime
from service.ledger.schemas import Money
from service.payments.models import LostReason, Outcome

# Exact decimals inside, JSON numbers outside (0.666667, not "0.666667").
Rate = Annotated[
    Decimal | None,
    PlainSerializer(lambda v: None if v is None else float(v), return_type=float | None),
    Field(description="Decimal rate (6 places), null when the denominator is 0"),
]


class EpisodeOut(BaseModel):
    account: str
    invoice_id: str
    customer_id: str
    subscription_id: str | None
    amount_due: Money
    attempts: int = Field(description="Payment attempts so far, the successful one included")
    first_failure_at: UtcDateTime = Field(description="The episode's start")
    last_failure_at: UtcDateTime
    next_retry_at: UtcDateTime | None = Field(description="Stripe's next automatic retry")
    decline_code: str | None = Field(description="From the latest linked failed charge")
    failure_message: str | None
    billing_reason: str | None
    action_required: bool = Field(description="Stripe asked for customer authentication")
    outcome: Outcome
    lost_reason: LostReason | None
    recovered_at: UtcDateTime | None
    closed_at: UtcDateTime | None = Field(description="When it stopped being open")
    time_to_recover_s: int | None = Field(description="recovered_at − first_failure_at")
    recovered_on_attempt: int | None


class EpisodeEventOut(BaseModel):
    event_id: str
    type: str
    created: UtcDateTime


class EpisodeDetailOut(EpisodeOut):
    event_ids: list[str] = Field(description="The Stripe events behind the episode")
    events: list[EpisodeEventOut]


class EpisodePage(BaseModel):
    data: list[EpisodeOut] = Field(description="Newest first failure first")
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class AttemptCount(BaseModel):
    attempt: int = Field(description="1 = the first charge, 2 = the first retry, ...")
    invoices: int
    amount: Money


class DeclineBreakdown(BaseModel):
    decline_code: str | None = Field(description="null: no failed charge linked")
    failed_invoices: int
    failed_amount: Money
    recovered_invoices: int
    recovered_amount: Money
    lost_invoices: int
    recovery_rate_by_count: Rate
    recovery_rate_by_amount: Rate


class RecoveryPeriod(BaseModel):
    period_start: date
    period_end: date = Field(description="Exclusive")
    failed_invoices: int = Field(description="Episodes whose first failure is in the period")
    failed_amount: Money
    recovered_invoices: int = Field(description="Of those, paid since (even after the period)")
    recovered_amount: Money
    recovery_rate_by_count: Rate
    recovery_rate_by_amount: Rate
    open_invoices: int
    open_amount: Money
    lost_invoices: int
    lost_amount: Money
    median_time_to_recover_s: int | None = Field(description="Nearest-rank median")
    p90_time_to_recover_s: int | None = Field(description="Nearest-rank 90th percentile")
    recovered_on_attempt: list[AttemptCount]
    mrr_at_risk: Money = Field(
        description="At period end: MRR of subscriptions with an open episode then"
    )
    subscriptions_at_risk: int
    involuntary_churned_mrr: Money = Field(description="Ledger churn rows in the period (≤ 0)")
    voluntary_churned_mrr: Money = Field(description="Ledger churn rows in the period (≤ 0)")
    decline_codes: list[DeclineBreakdown]
    unconverted_invoices: int = Field(
        description="Episodes without an FX rate: counted, left out of every amount"
    )


class RecoveryOut(BaseModel):
    """The envelope every /v1/metrics answer shares: `data`, `currency`, `as_of`, `stale`,
    `unconverted_currencies`."""

    account: str
    currency: str = Field(description="Reporting currency of every amount (lowercase ISO 4217)")
    interval: Interval
    start: date = Field(description="The first period's start")
    end: date = Field(description="The last period's end (exclusive)")
    as_of: UtcDateTime | None = Field(description="Newest projected event included")
    stale: bool = Field(
        description="Always false: recovery is read from the live episodes, not from "
        "precomputed tables (the projector's backlog is reported by /readyz)"
    )
    unconverted_currencies: list[str] = Field(
        description="Billing currencies of episodes in these periods with no FX rate to "
        "`currency`: those episodes are counted in `unconverted_invoices` and left out of "
        "every amount"
    )
    data: list[RecoveryPeriod] = Field(description="One item per period")
