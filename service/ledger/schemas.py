"""What /v1/customers, /v1/subscriptions and /v1/fx-rates answer (design §7)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from service.kit.money import display
from service.kit.time import UtcDateTime
from service.ledger.models import ChurnReason, Movement

CurrencyCode = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z]{3}$", to_lower=True, min_length=3, max_length=3)
]


class Money(BaseModel):
    amount: int = Field(description="Integer minor units (cents; whole yen for JPY)")
    currency: str = Field(description="ISO 4217, lowercase as Stripe writes it")
    display: str = Field(description="Decimal string for people, e.g. '49.00'")

    @classmethod
    def of(cls, amount: int, currency: str) -> Money:
        return cls(amount=amount, currency=currency, display=display(amount, currency))


class ReportingAmounts(BaseModel):
    currency: str
    fx_rate: str | None = Field(description="Rate used (day's rate); null when none known")
    from_mrr: int | None
    to_mrr: int | None
    delta: int | None


class MovementOut(BaseModel):
    id: int
    customer_id: str
    day: date
    movement: Movement
    from_mrr: Money
    to_mrr: Money
    delta: Money
    reporting: ReportingAmounts
    event_ids: list[str] = Field(description="The Stripe events behind this row (lineage)")
    subscription_ids: list[str]
    churn_reason: ChurnReason | None
    churn_feedback: str | None
    churn_comment: str | None


class MrrOnDay(BaseModel):
    day: date
    mrr: Money


class SubscriptionOut(BaseModel):
    subscription_id: str
    customer_id: str
    status: str
    mrr: Money
    plan: str | None = Field(description="Price (or plan) id of the first licensed item")
    plan_name: str | None = Field(
        description="Its product name and price nickname when the payload carried them"
    )
    billing_interval: str | None
    cancel_at_period_end: bool
    started_at: UtcDateTime | None = Field(description="Stripe `start_date`")
    ended_at: UtcDateTime | None
    last_event_id: str
    metadata: dict[str, str]


class WarningOut(BaseModel):
    kind: str
    subject: str
    message: str


class CustomerOut(BaseModel):
    account: str
    as_of: UtcDateTime | None = Field(
        description="Stripe `created` of the newest projected event (null: none yet)"
    )
    customer_id: str
    mrr: list[Money] = Field(description="Current MRR, one entry per currency")
    first_mrr_day: date | None = Field(description="Cohort: the first day with MRR")
    subscriptions: list[SubscriptionOut]
    history: list[MrrOnDay] = Field(description="Customer MRR from each ledger day on")
    movements: list[MovementOut]
    warnings: list[WarningOut]


class CustomerSort(StrEnum):
    mrr_desc = "mrr_desc"
    mrr_asc = "mrr_asc"
    customer_id = "customer_id"


class CustomerSummaryOut(BaseModel):
    customer_id: str
    mrr: Money = Field(
        description="Current MRR in the reporting currency: the sum of the customer's "
        "ledger rows' `delta_reporting` (rows with no FX rate left out), as in /v1/metrics"
    )
    mrr_by_currency: list[Money] = Field(description="Current MRR in each billing currency")
    first_mrr_day: date | None = Field(description="Cohort: the first day with MRR")
    last_movement_day: date | None = Field(description="Day of the newest ledger row")
    last_movement: Movement | None


class CustomersPage(BaseModel):
    account: str
    as_of: UtcDateTime | None = Field(
        description="Stripe `created` of the newest projected event (null: none yet)"
    )
    reporting_currency: str
    unconverted_currencies: list[str] = Field(
        description="Billing currencies with ledger rows and no FX rate to the reporting "
        "currency: those rows add nothing to `mrr` (their native MRR is in `mrr_by_currency`)"
    )
    sort: CustomerSort = Field(description="The order of `data` (ties by customer_id)")
    data: list[CustomerSummaryOut]
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class SubscriptionsPage(BaseModel):
    account: str
    as_of: UtcDateTime | None = Field(
        description="Stripe `created` of the newest projected event (null: none yet)"
    )
    data: list[SubscriptionOut] = Field(description="Ordered by subscription_id")
    has_more: bool
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")


class SubscriptionChangeOut(BaseModel):
    at: UtcDateTime
    day: date
    mrr: Money
    status: str
    cause: str = Field(description="event, or a rule: discount_started/ended, grace_ended")
    event_id: str


class SubscriptionDetailOut(SubscriptionOut):
    account: str
    history: list[SubscriptionChangeOut]
    event_ids: list[str] = Field(description="Every stored event about this subscription")


class FxRateIn(BaseModel):
    currency: CurrencyCode
    day: date = Field(description="Effective from this day until the next rate")
    rate: Decimal = Field(gt=0, description="1 unit of `currency` in the reporting currency")


class FxRatesIn(BaseModel):
    rates: list[FxRateIn] = Field(min_length=1, max_length=100_000)


class FxRateOut(BaseModel):
    currency: str
    day: date
    rate: str


class FxRatesOut(BaseModel):
    reporting_currency: str
    rates: list[FxRateOut]


class FxRatesApplied(BaseModel):
    rates: int
    movements_recomputed: int
