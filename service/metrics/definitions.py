"""Every metric once: name, kind, unit and formula (design §5).

The same objects give the JSON field descriptions, the CSV columns and the OpenAPI text, so
the three cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

Kind = Literal["amount", "rate", "count", "flag"]


@dataclass(frozen=True, slots=True)
class Metric:
    name: str
    kind: Kind
    unit: str
    formula: str

    def describe(self) -> str:
        return f"{self.formula} ({self.unit})"

    def field(self, **kwargs: Any) -> Any:
        """A pydantic Field whose description is the formula."""
        return Field(description=self.describe(), **kwargs)

    def csv_columns(self) -> tuple[str, ...]:
        # Amounts: integer minor units as in JSON, plus the decimal string BI tools display.
        return (self.name, f"{self.name}_display") if self.kind == "amount" else (self.name,)


def _m(name: str, kind: Kind, unit: str, formula: str) -> Metric:
    return Metric(name, kind, unit, formula)


MINOR = "minor units of the reporting currency"
RATE = "decimal rate, null when the denominator is 0"

METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        _m("mrr", "amount", MINOR, "MRR at the end of the period: sum of delta_reporting of "
           "every ledger row before period_end"),
        _m("arr", "amount", MINOR, "arr = 12 × mrr"),
        _m("customers", "count", "customers", "Customers with MRR > 0 at the end of the period"),
        _m("arpa", "amount", MINOR, "arpa = mrr ÷ customers, rounded half up to a minor "
           "unit; null when customers = 0"),
        _m("mrr_start", "amount", MINOR, "MRR at the end of the day before period_start"),
        _m("mrr_end", "amount", MINOR, "mrr_end = mrr_start + new_mrr + reactivation_mrr + "
           "expansion_mrr + contraction_mrr + churned_mrr, exactly"),
        _m("new_mrr", "amount", MINOR, "Sum of delta of `new` rows in the period (≥ 0)"),
        _m("expansion_mrr", "amount", MINOR, "Sum of delta of `expansion` rows (≥ 0)"),
        _m("contraction_mrr", "amount", MINOR, "Sum of delta of `contraction` rows (≤ 0)"),
        _m("churned_mrr", "amount", MINOR, "Sum of delta of `churn` rows (≤ 0)"),
        _m("reactivation_mrr", "amount", MINOR, "Sum of delta of `reactivation` rows (≥ 0)"),
        _m("new_customers", "count", "customers", "Customers whose first MRR is in the period"),
        _m("reactivated_customers", "count", "customers",
           "Customers going from 0 back to MRR > 0 in the period (events)"),
        _m("churned_customers", "count", "customers",
           "Customers going from MRR > 0 to 0 in the period (events)"),
        _m("expansions", "count", "rows", "Ledger rows of type `expansion`"),
        _m("contractions", "count", "rows", "Ledger rows of type `contraction`"),
        _m("unconverted_movements", "count", "rows",
           "Ledger rows in the period with no FX rate to the reporting currency; their "
           "amounts are left out of every sum (data quality)"),
        _m("customers_start", "count", "customers", "CS: customers with MRR > 0 at the end "
           "of the day before period_start"),
        _m("customers_end", "count", "customers", "CE: customers with MRR > 0 at the end of "
           "the period"),
        _m("customers_gained", "count", "customers", "CN: active at the end, not at start"),
        _m("customers_lost", "count", "customers", "Active at start, not at the end"),
        _m("customer_churn_rate", "rate", RATE, "customers_lost ÷ customers_start"),
        _m("customer_retention_rate", "rate", RATE, "(CE − CN) ÷ CS"),
        _m("gross_mrr_churn_rate", "rate", RATE,
           "(|churned_mrr| + |contraction_mrr|) ÷ mrr_start"),
        _m("net_mrr_churn_rate", "rate", RATE, "(|churned_mrr| + |contraction_mrr| − "
           "expansion_mrr − reactivation_mrr) ÷ mrr_start; below 0 is negative churn"),
        _m("expansion_rate", "rate", RATE, "(expansion_mrr + reactivation_mrr) ÷ mrr_start"),
        _m("nrr", "rate", RATE, "Net revenue retention: 1 − net_mrr_churn_rate"),
        _m("grr", "rate", RATE, "Gross revenue retention: 1 − gross_mrr_churn_rate"),
        _m("quick_ratio", "rate", "ratio, null when the denominator is 0",
           "(new_mrr + expansion_mrr + reactivation_mrr) ÷ (|churned_mrr| + |contraction_mrr|)"),
        _m("customer_days", "count", "customer-days", "Customer-days at risk: for each day "
           "of the period up to `through`, the customers with MRR > 0 at its start"),
        _m("churn_hazard", "rate", "probability per customer-day, null when no exposure",
           "churned_customers ÷ customer_days"),
        _m("monthly_churn_rate", "rate", RATE, "Monthly equivalent of the hazard: "
           "1 − (1 − churn_hazard)^30"),
        _m("ltv", "amount", MINOR, "arpa ÷ monthly_churn_rate (× gross_margin when given), "
           "rounded half up; null when either is null or the rate is 0"),
        _m("negative_churn", "flag", "boolean, null when undefined", "net_mrr_churn_rate < 0"),
        _m("churn_level", "flag", "good | normal | high, null when undefined",
           "good when monthly_churn_rate < churn_good_below (default 0.05), high when > "
           "churn_high_above (default 0.10), else normal"),
        _m("cohort_customers", "count", "customers", "Customers whose first MRR (UTC) is in "
           "the cohort month"),
        _m("initial_mrr", "amount", MINOR, "The cohort's MRR on each customer's first day"),
        _m("active_customers", "count", "customers",
           "Cohort customers with MRR > 0 at the end of the month"),
        _m("logo_retention", "rate", RATE, "active_customers ÷ cohort_customers"),
        _m("cohort_mrr", "amount", MINOR, "The cohort's MRR at the end of the month"),
        _m("mrr_retention", "rate", RATE, "cohort_mrr ÷ initial_mrr (net: includes expansion)"),
        _m("churns", "count", "rows", "`churn` ledger rows of the reason and feedback in "
           "the period (a customer churning twice counts twice)"),
    )
}  # fmt: skip

MRR_METRICS = ("mrr", "arr", "customers", "arpa")
MOVEMENT_METRICS = (
    "mrr_start", "new_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr",
    "reactivation_mrr", "mrr_end", "new_customers", "reactivated_customers",
    "churned_customers", "expansions", "contractions", "unconverted_movements",
)  # fmt: skip
CHURN_METRICS = (
    "mrr_start", "mrr_end", "customers_start", "customers_end", "customers_gained",
    "customers_lost", "customer_churn_rate", "customer_retention_rate",
    "gross_mrr_churn_rate", "net_mrr_churn_rate", "expansion_rate", "nrr", "grr",
    "quick_ratio", "churned_customers", "customer_days", "churn_hazard", "monthly_churn_rate",
    "arpa", "ltv", "negative_churn", "churn_level",
)  # fmt: skip
COHORT_METRICS = (
    "cohort_customers", "initial_mrr", "active_customers", "logo_retention", "cohort_mrr",
    "mrr_retention",
)  # fmt: skip
REASON_METRICS = ("churns", "churned_mrr")


def formulas(names: tuple[str, ...]) -> str:
    """A markdown list of the formulas, for an endpoint's OpenAPI description."""
    return "\n".join(f"* `{n}`: {METRICS[n].describe()}" for n in names)
