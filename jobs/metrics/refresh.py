"""The metrics refresh, kept importable here for the job's callers; it lives in
`service.metrics.refresh` (the service runs it live) and `service.metrics.compute`."""

from __future__ import annotations

from service.metrics.compute import (
    MOVEMENTS,
    PERIOD_INTERVALS,
    assign_segments,
    churn_reasons,
    cohorts,
    compute,
    customer_days,
    daily_flows,
    period_table,
    period_turnover,
)
from service.metrics.refresh import RefreshResult, refresh, refresh_account

__all__ = [
    "MOVEMENTS",
    "PERIOD_INTERVALS",
    "RefreshResult",
    "assign_segments",
    "churn_reasons",
    "cohorts",
    "compute",
    "customer_days",
    "daily_flows",
    "period_table",
    "period_turnover",
    "refresh",
    "refresh_account",
]
