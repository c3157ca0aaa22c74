"""Metric aggregates from the MRR ledger, with pandas (design §5, §8): pure functions of
frames, every precomputed table of `service.metrics.models` set-based (group-bys and
cumulative sums, no per-customer Python loops). `service.metrics.refresh` reads the
ledger and writes what these compute.

Conventions (they are the API's too):
* MRR in the reporting currency on a day = sum of `delta_reporting` of the ledger rows up
  to that day. A customer's series in a currency with any row lacking a reporting amount
  (no FX rate) is left out whole, of MRR, customer counts, churn and cohorts alike (so
  ARPA stays MRR ÷ customers of the same customers), and its rows counted as unconverted.
* A customer is active while any of its (currency) ledger series has MRR > 0; customer
  counts come from these customer-level flips (new, reactivation, churn).
* A customer belongs to one segment for its whole history: that of its primary
  subscription now (highest MRR, then latest), so segments add up to the whole.
"""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd

from service.metrics.recount import canonical, segment_key
from service.metrics.repository import DAILY_SUMS, PERIOD_SUMS, Tables

PERIOD_INTERVALS = ("week", "month", "quarter", "year")
MOVEMENTS = ("new", "expansion", "contraction", "churn", "reactivation")


def compute(ledger: pd.DataFrame, states: pd.DataFrame, through: date) -> Tables:
    """`ledger`: rows of one reporting currency sorted by (customer_id, day), `day` as
    datetime64; `states`: the account's subscription states (may be empty).

    Every table is a sum over customers of what each customer's rows add (given
    `through`), all-zero rows left out: `service.metrics.recount` adds a few customers'
    share the same way, in plain Python, for the incremental refresh."""
    ledger = leave_out_unconverted(ledger)
    segments, segment_of = assign_segments(ledger, states)
    ledger = ledger.assign(segment=ledger["customer_id"].map(segment_of))
    days = customer_days(ledger)
    flips = days[days["flip"] != ""]
    daily = daily_flows(ledger, flips)
    counted = ledger.drop_duplicates("customer_id")
    return Tables(
        segments=segments,
        daily=daily,
        periods=pd.concat([period_table(daily, flips, i, through) for i in PERIOD_INTERVALS]),
        churn=churn_reasons(ledger),
        cohorts=cohorts(ledger, days, flips, through),
        customers=counted.set_index("customer_id")["segment"],
    )


def leave_out_unconverted(ledger: pd.DataFrame) -> pd.DataFrame:
    """Every (customer, currency) series with a row lacking a reporting amount becomes
    inert: no movement type, MRR 0 and no reporting amount. Its rows are still there to
    be counted (`unconverted_movements`) and to place the customer in its segment, but
    they move no MRR, no customer count, no churn and no cohort. Left out partly, the
    series would add a later delta to MRR without the amount it started from, and count
    a customer whose MRR is not in the sum (ARPA wrong)."""
    missing = ledger["delta_reporting"].isna()
    if not missing.any():
        return ledger
    gap = missing.groupby([ledger["customer_id"], ledger["currency"]]).transform("any")
    out = ledger.copy()
    out.loc[gap, "movement"] = ""
    out.loc[gap, ["from_mrr", "to_mrr"]] = 0
    out.loc[gap, "delta_reporting"] = pd.NA
    return out


def assign_segments(ledger: pd.DataFrame, states: pd.DataFrame) -> tuple[pd.DataFrame, pd.Series]:
    """Each customer's segment from its primary subscription; customers with no known
    subscription get their latest ledger currency and nothing else."""
    latest = ledger.drop_duplicates("customer_id", keep="last")[["customer_id", "currency"]]
    primary = (
        states.assign(recency=states["ended_at"].fillna(states["started_at"]).fillna(0))
        .sort_values(
            ["customer_id", "mrr", "recency", "subscription_id"],
            ascending=[True, False, False, True],
        )
        .drop_duplicates("customer_id")
    )
    attrs = latest.merge(primary, on="customer_id", how="left")
    attrs["currency"] = attrs["sub_currency"].fillna(attrs["currency"])
    # Canonical JSON once per distinct stored text, not once per customer.
    texts = attrs["metadata"].fillna("{}")
    attrs["metadata"] = texts.map({t: canonical(t) for t in texts.unique()})
    keys = ["plan", "billing_interval", "currency", "metadata"]
    combos = attrs[keys].drop_duplicates().reset_index(drop=True)
    # Missing attributes hash as None whatever pandas made of them (NaN in a column of
    # strings, None in one of nothing else): the same customer, the same segment.
    plain = combos.astype(object).where(combos.notna(), None)
    combos["segment"] = [segment_key(*row) for row in plain.itertuples(index=False)]
    attrs = attrs.merge(combos, on=keys, how="left")
    counts = attrs.groupby("segment").size().rename("customers").reset_index()
    segments = combos.merge(counts, on="segment")
    segments["metadata"] = segments["metadata"].map(json.loads)
    segments = segments.astype(object).where(segments.notna(), None)
    return segments, attrs.set_index("customer_id")["segment"]


def customer_days(ledger: pd.DataFrame) -> pd.DataFrame:
    """Per customer and ledger day: active after the day, and the customer-level flip."""
    active = ledger["to_mrr"] > 0
    was = active.groupby([ledger["customer_id"], ledger["currency"]]).shift(fill_value=False)
    step = active.astype(int) - was.astype(int)
    days = (
        step.groupby([ledger["segment"], ledger["customer_id"], ledger["day"]])
        .sum()
        .rename("step")
        .reset_index()
    )
    days["active"] = days.groupby("customer_id")["step"].cumsum() > 0
    before = days.groupby("customer_id")["active"].shift(fill_value=False)
    starts = days["active"] & ~before
    first = starts & (starts.astype(int).groupby(days["customer_id"]).cumsum() == 1)
    days["flip"] = np.select(
        [first, starts, before & ~days["active"]], ["new", "reactivation", "churn"], ""
    )
    return days


def daily_flows(ledger: pd.DataFrame, flips: pd.DataFrame) -> pd.DataFrame:
    converted = ledger["delta_reporting"].notna()
    amount = ledger["delta_reporting"].fillna(0).astype("int64")
    names = dict(
        zip(MOVEMENTS, ("new", "expansion", "contraction", "churned", "reactivation"), strict=True)
    )
    frame = pd.DataFrame({"segment": ledger["segment"], "day": ledger["day"]})
    for movement, name in names.items():
        frame[f"{name}_mrr"] = amount.where(ledger["movement"] == movement, 0)
    frame["expansions"] = (ledger["movement"] == "expansion").astype(int)
    frame["contractions"] = (ledger["movement"] == "contraction").astype(int)
    frame["unconverted_movements"] = (~converted).astype(int)
    flows = frame.groupby(["segment", "day"]).sum()
    kinds = {
        "new": "new_customers",
        "reactivation": "reactivated_customers",
        "churn": "churned_customers",
    }
    counts = (
        flips.groupby(["segment", "day", "flip"])
        .size()
        .unstack("flip", fill_value=0)
        .reindex(columns=list(kinds), fill_value=0)
        .rename(columns=kinds)
    )
    out = flows.join(counts, how="outer").fillna(0).astype("int64").reset_index()
    # All-zero days (a movement whose reporting amount rounds to 0) are left out, as in
    # every table: a row exists exactly when some customer adds to it.
    out = out[(out[list(DAILY_SUMS)] != 0).any(axis=1)]
    return out[["segment", "day", *DAILY_SUMS]].reset_index(drop=True)


def period_floor(days: pd.Series, interval: str) -> pd.Series:
    if interval == "week":
        return days - pd.to_timedelta(days.dt.day_of_week, unit="D")
    code = {"month": "M", "quarter": "Q", "year": "Y"}[interval]
    return days.dt.to_period(code).dt.start_time


def period_table(
    daily: pd.DataFrame, flips: pd.DataFrame, interval: str, through: date
) -> pd.DataFrame:
    """One `metrics_periods` row per segment and period from the segment's first to
    `through`'s: the daily flows summed, customer-days at risk, and turnover."""
    columns = ["segment", "interval", "period_start", "customers_lost", "customers_gained",
               *DAILY_SUMS, "customer_days"]  # fmt: skip
    if daily.empty:
        return pd.DataFrame(columns=columns)
    horizon = pd.Timestamp(through) + pd.Timedelta(days=1)
    frame = daily.assign(period_start=period_floor(daily["day"], interval))
    # Customer-days, from the flips alone (design §5): a period's customers at its start
    # count for each of its days up to `through`, and a day's net change counts from the
    # next day to the period's end.
    net = frame["new_customers"] + frame["reactivated_customers"] - frame["churned_customers"]
    period_end = period_shift(frame["period_start"], interval)
    frame["after"] = net * _day_count(frame["day"] + pd.Timedelta(days=1), period_end, horizon)
    frame["net"] = net
    sums = frame.groupby(["segment", "period_start"])[[*DAILY_SUMS, "net", "after"]].sum()

    # Dense from each segment's first period, so that the running customer count carries
    # through periods without ledger rows.
    firsts = sums.reset_index().groupby("segment")["period_start"].min()
    last = period_floor(pd.Series([pd.Timestamp(through)]), interval).iloc[0]
    starts = period_range(firsts.min(), last, interval)
    grid = pd.MultiIndex.from_product([firsts.index, starts], names=["segment", "period_start"])
    out = sums.reindex(grid, fill_value=0).reset_index()
    out = out[out["period_start"] >= out["segment"].map(firsts)]
    opening = out.groupby("segment")["net"].cumsum() - out["net"]
    length = _day_count(out["period_start"], period_shift(out["period_start"], interval), horizon)
    out["customer_days"] = opening * length + out["after"]

    turnover = period_turnover(flips, interval)
    out = out.merge(turnover, on=["segment", "period_start"], how="left")
    out[["customers_lost", "customers_gained"]] = (
        out[["customers_lost", "customers_gained"]].fillna(0).astype("int64")
    )
    out["interval"] = interval
    values = [*DAILY_SUMS, *PERIOD_SUMS]
    out = out[(out[values] != 0).any(axis=1)]
    return out[columns].reset_index(drop=True)


def _day_count(first: pd.Series, end: pd.Series, horizon: pd.Timestamp) -> pd.Series:
    """Days in [first, min(end, horizon)), never negative."""
    return (end.clip(upper=horizon) - first).dt.days.clip(lower=0).astype("int64")


def period_shift(starts: pd.Series, interval: str) -> pd.Series:
    """The next period's start."""
    if interval == "week":
        return starts + pd.Timedelta(days=7)
    months = {"month": 1, "quarter": 3, "year": 12}[interval]
    return starts + pd.DateOffset(months=months)


def period_range(first: pd.Timestamp, last: pd.Timestamp, interval: str) -> pd.DatetimeIndex:
    """Every period start from `first` to `last`, both period starts."""
    freq = {"week": "7D", "month": "MS", "quarter": "QS", "year": "YS"}[interval]
    return pd.date_range(first, last, freq=freq)


def period_turnover(flips: pd.DataFrame, interval: str) -> pd.DataFrame:
    """Per calendar period: customers active at its start and not at its end (their first
    and last flip in it are churns), and the reverse (both are activations)."""
    frame = flips.assign(
        period_start=period_floor(flips["day"], interval), churn=flips["flip"] == "churn"
    )
    ends = frame.groupby(["segment", "customer_id", "period_start"])["churn"].agg(["first", "last"])
    ends["customers_lost"] = (ends["first"] & ends["last"]).astype(int)
    ends["customers_gained"] = (~ends["first"] & ~ends["last"]).astype(int)
    out = ends.groupby(["segment", "period_start"])[["customers_lost", "customers_gained"]].sum()
    return out[(out["customers_lost"] > 0) | (out["customers_gained"] > 0)].reset_index()


def churn_reasons(ledger: pd.DataFrame) -> pd.DataFrame:
    churned = ledger[ledger["movement"] == "churn"]
    frame = pd.DataFrame(
        {
            "segment": churned["segment"],
            "day": churned["day"],
            "reason": churned["churn_reason"].fillna("unknown"),
            "feedback": churned["churn_feedback"].fillna(""),
            "churns": 1,
            "churned_mrr": churned["delta_reporting"].fillna(0).astype("int64"),
        }
    )
    return frame.groupby(["segment", "day", "reason", "feedback"]).sum().reset_index()


def _month_index(days: pd.Series) -> pd.Series:
    return days.dt.year * 12 + days.dt.month - 1


def cohorts(
    ledger: pd.DataFrame, days: pd.DataFrame, flips: pd.DataFrame, through: date
) -> pd.DataFrame:
    """Per segment, cohort (month of first MRR) and month: the cohort's active customers
    and MRR at the month's end, dense from the cohort month to `through`'s month."""
    keys = ["segment", "cohort", "month"]
    first = flips.loc[flips["flip"] == "new", ["customer_id", "day"]]
    cohort_of = first.set_index("customer_id")["day"].pipe(_month_index).rename("cohort")
    # Active at each month end, as steps: +1 / -1 when it differs from the month before.
    monthly = days.assign(month=_month_index(days["day"]))
    monthly = monthly.groupby(["segment", "customer_id", "month"])["active"].last().reset_index()
    before = monthly.groupby("customer_id")["active"].shift(fill_value=False)
    monthly["active_step"] = monthly["active"].astype(int) - before.astype(int)
    mrr = ledger.assign(month=_month_index(ledger["day"]), mrr_step=ledger["delta_reporting"])
    mrr = mrr.groupby(["customer_id", "month"])["mrr_step"].sum().reset_index()
    # Every (customer, month) with ledger rows is in both frames.
    steps = monthly.merge(mrr, on=["customer_id", "month"], how="left")
    steps = steps.join(cohort_of, on="customer_id").dropna(subset=["cohort"])
    flows = steps.groupby(keys)[["active_step", "mrr_step"]].sum()

    initial = first.join(cohort_of, on="customer_id").merge(
        ledger[["customer_id", "day", "segment", "delta_reporting"]], on=["customer_id", "day"]
    )
    base = initial.groupby(["segment", "cohort"]).agg(
        cohort_customers=("customer_id", "nunique"), initial_mrr=("delta_reporting", "sum")
    )
    if base.empty:
        return pd.DataFrame(
            columns=[
                "segment",
                "cohort_month",
                "months_since_start",
                "cohort_customers",
                "initial_mrr",
                "active_customers",
                "cohort_mrr",
            ]
        )
    # The dense grid: each (segment, cohort) repeated once per month up to `through`.
    last = through.year * 12 + through.month - 1
    base = base.reset_index()
    spans = (last - base["cohort"] + 1).clip(lower=1).astype(int)
    grid = base.loc[base.index.repeat(spans)].reset_index(drop=True)
    grid["months_since_start"] = grid.groupby(["segment", "cohort"]).cumcount()
    grid["month"] = grid["cohort"] + grid["months_since_start"]
    grid = grid.join(flows, on=keys).fillna({"active_step": 0, "mrr_step": 0})
    totals = grid.groupby(["segment", "cohort"])[["active_step", "mrr_step"]].cumsum()
    grid["active_customers"] = totals["active_step"].astype("int64")
    grid["cohort_mrr"] = totals["mrr_step"].astype("int64")
    grid["cohort_month"] = pd.to_datetime(
        {"year": grid["cohort"] // 12, "month": grid["cohort"] % 12 + 1, "day": 1}
    )
    grid["initial_mrr"] = grid["initial_mrr"].fillna(0).astype("int64")
    return grid[["segment", "cohort_month", "months_since_start", "cohort_customers",
                 "initial_mrr", "active_customers", "cohort_mrr"]]  # fmt: skip
