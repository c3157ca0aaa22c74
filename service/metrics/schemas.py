"""What /v1/metrics/* and /v1/movements answer (design §7): integer minor units with their
currency and a display string, rates as decimals, null when undefined."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from service.kit.periods import CalendarInterval
from service.kit.time import UtcDateTime
from service.ledger.schemas import Money, MovementOut
from service.metrics.definitions import METRICS

M = METRICS
Rate = float | None
ChurnLevel = Literal["good", "normal", "high"]


SEGMENT_LABEL = (
    "`segment` for people: with `segment_by=plan` the price's product name and nickname "
    '("Pro · Monthly", as the newest subscription on the price names them; the price id '
    "while no payload has named it), otherwise `segment` itself; null when not segmenting"
)


class SegmentBy(StrEnum):
    plan = "plan"
    billing_interval = "billing_interval"
    currency = "currency"


class MetricsAnswer(BaseModel):
    account: str = Field(description="Stripe Connect account; empty for the platform")
    currency: str = Field(description="Reporting currency of every amount (lowercase ISO 4217)")
    start: date = Field(description="Start of the first period (rounded down to a period)")
    end: date = Field(description="End of the last period, exclusive (rounded up)")
    segment_by: SegmentBy | None
    as_of: UtcDateTime | None = Field(
        description="Stripe `created` time of the newest event included; null when the "
        "metrics have never been computed or hold no events"
    )
    refreshed_at: UtcDateTime | None = Field(description="When the metric tables were computed")
    through: date | None = Field(description="Last UTC day the metric tables describe")
    stale: bool = Field(
        description="Ledger changes are waiting for the refresh (which the service runs "
        "within about a second of each projection)"
    )
    stale_seconds: float | None = Field(
        None,
        description="While stale: seconds since the oldest ledger change the tables miss; "
        "null when fresh",
    )
    unconverted_movements: int = Field(
        description="Ledger rows before `end` left out for want of an FX rate: a customer's "
        "series in a currency with a day that has no rate to the reporting currency is "
        "left out whole, of every amount and every customer count alike"
    )
    unconverted_currencies: list[str] = Field(
        description="The billing currencies with ledger rows before `end` and no FX rate "
        "to `currency` (across the account): load rates (`churn-ledger fx-sync`, "
        "`fx-load` or PUT /v1/fx-rates) to bring them in"
    )


class PeriodRow(BaseModel):
    period_start: date
    period_end: date = Field(description="Exclusive")
    segment: str | None = Field(description="Value of `segment_by`; null when not segmenting")
    segment_label: str | None = Field(description=SEGMENT_LABEL)


class MrrRow(PeriodRow):
    mrr: Money = M["mrr"].field()
    arr: Money = M["arr"].field()
    customers: int = M["customers"].field()
    arpa: Money | None = M["arpa"].field()


class MovementsRow(PeriodRow):
    mrr_start: Money = M["mrr_start"].field()
    new_mrr: Money = M["new_mrr"].field()
    expansion_mrr: Money = M["expansion_mrr"].field()
    contraction_mrr: Money = M["contraction_mrr"].field()
    churned_mrr: Money = M["churned_mrr"].field()
    reactivation_mrr: Money = M["reactivation_mrr"].field()
    mrr_end: Money = M["mrr_end"].field()
    new_customers: int = M["new_customers"].field()
    reactivated_customers: int = M["reactivated_customers"].field()
    churned_customers: int = M["churned_customers"].field()
    expansions: int = M["expansions"].field()
    contractions: int = M["contractions"].field()
    unconverted_movements: int = M["unconverted_movements"].field()


class ChurnRow(PeriodRow):
    mrr_start: Money = M["mrr_start"].field()
    mrr_end: Money = M["mrr_end"].field()
    customers_start: int = M["customers_start"].field()
    customers_end: int = M["customers_end"].field()
    customers_gained: int = M["customers_gained"].field()
    customers_lost: int = M["customers_lost"].field()
    customer_churn_rate: Rate = M["customer_churn_rate"].field()
    customer_retention_rate: Rate = M["customer_retention_rate"].field()
    gross_mrr_churn_rate: Rate = M["gross_mrr_churn_rate"].field()
    net_mrr_churn_rate: Rate = M["net_mrr_churn_rate"].field()
    expansion_rate: Rate = M["expansion_rate"].field()
    nrr: Rate = M["nrr"].field()
    grr: Rate = M["grr"].field()
    quick_ratio: Rate = M["quick_ratio"].field()
    churned_customers: int = M["churned_customers"].field()
    customer_days: int = M["customer_days"].field()
    churn_hazard: Rate = M["churn_hazard"].field()
    monthly_churn_rate: Rate = M["monthly_churn_rate"].field()
    arpa: Money | None = M["arpa"].field()
    ltv: Money | None = M["ltv"].field()
    negative_churn: bool | None = M["negative_churn"].field()
    churn_level: ChurnLevel | None = M["churn_level"].field()


class ReasonRow(PeriodRow):
    reason: Literal["voluntary", "involuntary", "unknown"] = Field(
        description="voluntary: cancellation requested; involuntary: payment failed or "
        "disputed; unknown: the ledger row carries no reason"
    )
    feedback: str | None = Field(description="Stripe `cancellation_details.feedback`")
    churns: int = M["churns"].field()
    churned_mrr: Money = M["churned_mrr"].field()


class CohortRow(BaseModel):
    cohort_month: date = Field(description="First day of the month of the customers' first MRR")
    months_since_start: int = Field(description="0 is the cohort month itself")
    month: date = Field(description="The month described (its first day)")
    segment: str | None = Field(description="Value of `segment_by`; null when not segmenting")
    segment_label: str | None = Field(description=SEGMENT_LABEL)
    cohort_customers: int = M["cohort_customers"].field()
    initial_mrr: Money = M["initial_mrr"].field()
    active_customers: int = M["active_customers"].field()
    logo_retention: Rate = M["logo_retention"].field()
    cohort_mrr: Money = M["cohort_mrr"].field()
    mrr_retention: Rate = M["mrr_retention"].field()


AS_KNOWN_ON = Field(
    None,
    description="When asked `as_known_on`: the figures are those published on that day "
    "(closed months only: the close's snapshot with the restatements detected by then)",
)


class MrrAnswer(MetricsAnswer):
    interval: CalendarInterval
    as_known_on: date | datetime | None = AS_KNOWN_ON
    data: list[MrrRow]


class MovementsAnswer(MetricsAnswer):
    interval: CalendarInterval
    as_known_on: date | datetime | None = AS_KNOWN_ON
    data: list[MovementsRow]


class ChurnAnswer(MetricsAnswer):
    interval: CalendarInterval
    churn_good_below: float
    churn_high_above: float
    gross_margin: float | None
    as_known_on: date | datetime | None = AS_KNOWN_ON
    data: list[ChurnRow]


class ReasonsAnswer(MetricsAnswer):
    interval: CalendarInterval
    as_known_on: date | datetime | None = AS_KNOWN_ON
    data: list[ReasonRow]


class CohortsAnswer(MetricsAnswer):
    as_known_on: date | datetime | None = AS_KNOWN_ON
    data: list[CohortRow]


class MovementsPage(BaseModel):
    account: str
    as_of: UtcDateTime | None = Field(description="Stripe `created` of the newest handled event")
    data: list[MovementOut] = Field(description="Ledger rows ordered by (day, id)")
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class ExplainedRow(MovementOut):
    value: int = Field(
        description="What this row adds to the figure: its `reporting.delta` for amounts; "
        "1 or 0 for counts (a customer flipping on a day with rows in several currencies "
        "counts once, on the first)"
    )


class ExplainedCustomer(BaseModel):
    customer_id: str
    value: int = Field(description="The customer's part of the figure: sum of its rows' `value`")
    rows: list[ExplainedRow] = Field(description="Its ledger rows behind the figure, oldest first")


class ExplainAnswer(MetricsAnswer):
    metric: str
    kind: Literal["amount", "count"] = Field(
        description="amount: minor units of `currency`; count: customers or rows"
    )
    interval: CalendarInterval
    period_start: date
    period_end: date = Field(description="Exclusive")
    value: int = Field(description="Sum of the customers' `value`: the figure explained")
    display: str | None = Field(description="`value` as a decimal string, for amounts")
    reported: int = Field(
        description="The figure as /v1/metrics/* report it (the metric tables); equal to "
        "`value` whenever `stale` is false"
    )
    customers: int = Field(description="Customers listed")
    rows: int = Field(description="Ledger rows listed")
    data: list[ExplainedCustomer] = Field(
        description="Largest part first (by absolute value), then by customer id"
    )


class ClosedPeriodOut(BaseModel):
    account: str
    period: str = Field(description="The month, YYYY-MM")
    period_start: date
    period_end: date = Field(description="Exclusive")
    currency: str = Field(description="Reporting currency of the amounts")
    closed_at: UtcDateTime
    as_of: UtcDateTime | None = Field(description="Newest event the figures included at the close")
    figures_at_close: dict[str, int] = Field(
        description="The month's figures when it was closed (amounts in minor units): "
        "mrr_start, mrr_end, customers_start, customers_end, every movement figure, "
        "customers_gained, customers_lost and customer_days; each cohort's cell of the "
        "month as `cohort:YYYY-MM:<cohort_customers|initial_mrr|active_customers|"
        "cohort_mrr>`; the churn per reason and feedback as `churn_reason:<reason>:"
        "<feedback, empty when none>:<churns|churned_mrr>` (cohort and reason keys are "
        "sparse: absent is 0). Months closed before the churn, cohort and reason figures "
        "were kept hold the movement figures only."
    )
    figures: dict[str, int] = Field(description="As published now: after any restatements")
    restatements: int = Field(description="How many restatements changed it since")


class PeriodsFreshness(BaseModel):
    """How current `figures` (now) and the restatements found are: both come from the
    refreshes of the metric tables, so they are as fresh as those."""

    account: str
    as_of: UtcDateTime | None = Field(
        description="Stripe `created` time of the newest event the metric tables include: "
        "the figures now, and the restatements found so far, are as of it"
    )
    refreshed_at: UtcDateTime | None = Field(description="When the metric tables were computed")
    stale: bool = Field(
        description="Ledger changes are waiting for the refresh, which may restate a month"
    )
    stale_seconds: float | None = Field(
        None, description="While stale: seconds since the oldest change the tables miss"
    )


class ClosedPeriodsPage(PeriodsFreshness):
    data: list[ClosedPeriodOut] = Field(description="Oldest month first")


class RestatedFigure(BaseModel):
    metric: str
    old: int
    new: int


class RestatementOut(BaseModel):
    id: int
    account: str
    period: str = Field(description="The closed month, YYYY-MM")
    currency: str
    detected_at: UtcDateTime = Field(description="When the refresh found the change")
    changes: list[RestatedFigure] = Field(description="Every figure that moved, by name")
    event_ids: list[str] = Field(
        description="The Stripe events received after the close that touched the month "
        "(in its ledger rows; else the late events of its customers), not named before"
    )


class RestatementsPage(PeriodsFreshness):
    data: list[RestatementOut] = Field(description="Oldest first")
