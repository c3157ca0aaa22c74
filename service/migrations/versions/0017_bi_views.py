"""bi_* views: a read-only SQL interface for BI tools that connect to the database

Metabase, dbt and the like read these views instead of the tables, whose layout serves
the projector and the refresh and may change. The views are a stable interface: same
names, columns and meaning on SQLite and PostgreSQL, documented in README.md ("SQL views
for BI tools"), changed only by a new migration with a note there. They hold nothing of
their own; each reads the tables as they are at the moment of the query.

Conventions: money in integer minor units beside an explicit currency column, columns
named with their unit (`mrr_minor`, `time_to_recover_seconds`); instants are
`timestamp with time zone` on PostgreSQL and ISO 8601 text in UTC on SQLite
(`2025-03-01T00:00:00Z`); days are `date` / `YYYY-MM-DD` text; booleans are boolean on
PostgreSQL and 0/1 on SQLite; id lists are JSON text (`["evt_1", "evt_2"]`) on both.

A migration that alters a table these views read (mrr_movements, ledger_customers,
subscription_states, payment_episodes, metrics_periods, metrics_segments,
metrics_refreshes, closed_periods, restatements) must drop the views first and create
them again after: on SQLite, Alembic's batch mode recreates a table (copy, drop, rename)
and the rename fails while a view reads the dropped table; on PostgreSQL a column a view
reads can be neither dropped nor retyped.

Revision ID: 0017_bi_views
Revises: 0016_closed_periods
Create Date: 2026-12-03 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Callable

from alembic import op

revision = "0017_bi_views"
down_revision = "0016_closed_periods"
branch_labels = None
depends_on = None

# The figures a close keeps (service.metrics.closing.FIGURES as of this revision), each
# with its column name here: money ones carry `_minor`. Frozen: a figure added later
# needs a new migration for its column.
FIGURES = (
    ("mrr_start", "mrr_start_minor"),
    ("mrr_end", "mrr_end_minor"),
    ("customers_start", "customers_start"),
    ("customers_end", "customers_end"),
    ("new_mrr", "new_mrr_minor"),
    ("expansion_mrr", "expansion_mrr_minor"),
    ("contraction_mrr", "contraction_mrr_minor"),
    ("churned_mrr", "churned_mrr_minor"),
    ("reactivation_mrr", "reactivation_mrr_minor"),
    ("new_customers", "new_customers"),
    ("reactivated_customers", "reactivated_customers"),
    ("churned_customers", "churned_customers"),
    ("expansions", "expansions"),
    ("contractions", "contractions"),
    ("unconverted_movements", "unconverted_movements"),
)
MRR_FLOWS = ("new_mrr", "expansion_mrr", "contraction_mrr", "churned_mrr", "reactivation_mrr")
COUNTS = (
    "new_customers", "reactivated_customers", "churned_customers", "expansions",
    "contractions", "customers_lost", "customers_gained", "customer_days",
    "unconverted_movements",
)  # fmt: skip


class Dialect:
    """The few expressions SQLite and PostgreSQL spell differently."""

    def __init__(self, name: str) -> None:
        self.pg = name == "postgresql"

    def unix(self, column: str) -> str:
        """Unix seconds as an instant."""
        if self.pg:
            return f"to_timestamp({column})"
        return f"strftime('%Y-%m-%dT%H:%M:%SZ', {column}, 'unixepoch')"

    def instant(self, column: str) -> str:
        """A DateTime(timezone=True) column (SQLite holds UTC as 'YYYY-MM-DD HH:MM:SS.f')."""
        return column if self.pg else f"strftime('%Y-%m-%dT%H:%M:%fZ', {column})"

    def json_text(self, column: str) -> str:
        return f"CAST({column} AS TEXT)" if self.pg else column

    def json_int(self, column: str, key: str) -> str:
        if self.pg:
            return f"CAST({column} ->> '{key}' AS BIGINT)"
        return f"CAST(json_extract({column}, '$.{key}') AS BIGINT)"

    def array_item(self, column: str, index: int) -> str:
        if self.pg:
            return f"CAST({column} ->> {index} AS BIGINT)"
        return f"CAST(json_extract({column}, '$[{index}]') AS BIGINT)"

    def elements(self, column: str, alias: str) -> str:
        """A JSON array of strings as rows with one column, `value`."""
        if self.pg:
            return f"json_array_elements_text({column}) AS {alias}(value)"
        return f"json_each({column}) AS {alias}"

    def members(self, column: str, alias: str) -> str:
        """A JSON object as rows (`key`, `value`)."""
        return f"json_each({column}) AS {alias}"

    def month_of(self, column: str) -> str:
        if self.pg:
            return f"CAST(date_trunc('month', {column}) AS DATE)"
        return f"strftime('%Y-%m-01', {column})"

    def next_month(self, column: str) -> str:
        if self.pg:
            return f"CAST({column} + INTERVAL '1 month' AS DATE)"
        return f"date({column}, '+1 month')"

    def greatest(self, a: str, b: str) -> str:
        return f"GREATEST({a}, {b})" if self.pg else f"MAX({a}, {b})"

    def codepoint(self, column: str) -> str:
        """Ordered by code point, as Python compares (SQLite's default collation)."""
        return f'{column} COLLATE "C"' if self.pg else column


def customer_mrr(d: Dialect) -> str:
    # The reporting MRR of a series is the sum of its rows' reporting deltas (each at its
    # day's rate), as the metric tables add it up; a series with a row lacking an FX rate
    # is left out of the metrics whole, so NULL here.
    return """
SELECT g.account, g.customer_id, g.currency,
       l.to_mrr AS mrr_minor,
       l.reporting_currency,
       CASE WHEN g.unconverted = 0 AND g.reporting_currencies = 1
            THEN g.reporting_sum END AS mrr_reporting_minor,
       g.first_day AS first_movement_day,
       g.last_day AS last_movement_day,
       l.movement AS last_movement_kind
FROM (
    SELECT account, customer_id, currency,
           MIN(day) AS first_day, MAX(day) AS last_day,
           CAST(SUM(delta_reporting) AS BIGINT) AS reporting_sum,
           COUNT(*) - COUNT(delta_reporting) AS unconverted,
           COUNT(DISTINCT reporting_currency) AS reporting_currencies
    FROM mrr_movements
    GROUP BY account, customer_id, currency
) AS g
JOIN mrr_movements AS l
  ON l.account = g.account AND l.customer_id = g.customer_id
 AND l.currency = g.currency AND l.day = g.last_day
"""


def customers(d: Dialect) -> str:
    return """
SELECT c.account, c.customer_id,
       CASE WHEN s.active_series > 0 THEN 'active'
            WHEN c.first_mrr_day IS NOT NULL THEN 'churned'
            ELSE 'never_active' END AS status,
       CASE WHEN s.customer_id IS NULL THEN 0
            WHEN s.reporting_currencies = 1 THEN s.mrr_reporting_minor END
           AS mrr_reporting_minor,
       s.reporting_currency,
       (COALESCE(s.unconverted_series, 0) > 0) AS unconverted,
       c.first_mrr_day,
       s.last_movement_day
FROM ledger_customers AS c
LEFT JOIN (
    SELECT account, customer_id,
           SUM(CASE WHEN mrr_minor > 0 THEN 1 ELSE 0 END) AS active_series,
           CAST(COALESCE(SUM(mrr_reporting_minor), 0) AS BIGINT) AS mrr_reporting_minor,
           COUNT(*) - COUNT(mrr_reporting_minor) AS unconverted_series,
           MAX(reporting_currency) AS reporting_currency,
           COUNT(DISTINCT reporting_currency) AS reporting_currencies,
           MAX(last_movement_day) AS last_movement_day
    FROM bi_customer_mrr
    GROUP BY account, customer_id
) AS s ON s.account = c.account AND s.customer_id = c.customer_id
"""


def subscriptions(d: Dialect) -> str:
    return f"""
SELECT account, subscription_id, customer_id, status, currency,
       mrr AS mrr_minor,
       plan, plan_name, billing_interval, cancel_at_period_end,
       {d.unix("started_at")} AS started_at,
       {d.unix("ended_at")} AS ended_at,
       last_event_id,
       {d.json_text("metadata")} AS metadata
FROM subscription_states
"""


def movements(d: Dialect) -> str:
    return f"""
SELECT id AS movement_id, account, customer_id, currency, day,
       movement AS kind,
       from_mrr AS from_mrr_minor, to_mrr AS to_mrr_minor, delta AS amount_minor,
       reporting_currency, fx_rate,
       from_mrr_reporting AS from_mrr_reporting_minor,
       to_mrr_reporting AS to_mrr_reporting_minor,
       delta_reporting AS amount_reporting_minor,
       churn_reason, churn_feedback, churn_comment,
       {d.json_text("event_ids")} AS event_ids,
       {d.json_text("subscription_ids")} AS subscription_ids
FROM mrr_movements
"""


def movement_events(d: Dialect) -> str:
    return f"""
SELECT m.id AS movement_id, m.account, m.customer_id, m.currency, m.day,
       e.value AS event_id
FROM mrr_movements AS m, {d.elements("m.event_ids", "e")}
"""


def mrr_monthly(d: Dialect) -> str:
    # metrics_periods is sparse (a month with no customers and no movement of a segment
    # has no row): the months from a segment's first to the refresh's last are generated
    # here, so that every segment has every month and the balances chain.
    flows = ",\n".join(f"           COALESCE(p.{c}, 0) AS {c}" for c in (*MRR_FLOWS, *COUNTS))
    mrr = " + ".join(MRR_FLOWS)
    net = "new_customers + reactivated_customers - churned_customers"
    amounts = ",\n".join(f"       b.{c} AS {c}_minor" for c in MRR_FLOWS)
    counts = ",\n".join(f"       b.{c}" for c in COUNTS)
    return f"""
WITH RECURSIVE spans AS (
    SELECT account, reporting_currency, segment,
           MIN(period_start) AS first_month, MAX(period_start) AS last_month
    FROM metrics_periods
    WHERE "interval" = 'month'
    GROUP BY account, reporting_currency, segment
),
months (account, reporting_currency, segment, month, last_month) AS (
    SELECT s.account, s.reporting_currency, s.segment, s.first_month,
           {d.greatest("s.last_month", f"COALESCE({d.month_of('r.through')}, s.last_month)")}
    FROM spans AS s
    LEFT JOIN metrics_refreshes AS r ON r.account = s.account
    UNION ALL
    SELECT account, reporting_currency, segment, {d.next_month("month")}, last_month
    FROM months
    WHERE month < last_month
),
flows AS (
    SELECT m.account, m.reporting_currency, m.segment, m.month,
{flows}
    FROM months AS m
    LEFT JOIN metrics_periods AS p
      ON p.account = m.account AND p.reporting_currency = m.reporting_currency
     AND p.segment = m.segment AND p."interval" = 'month' AND p.period_start = m.month
),
balances AS (
    SELECT f.*,
           CAST(SUM({mrr}) OVER w AS BIGINT) AS mrr_end,
           CAST(SUM({net}) OVER w AS BIGINT) AS customers_end
    FROM flows AS f
    WINDOW w AS (
        PARTITION BY account, reporting_currency, segment ORDER BY month
        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    )
),
labels AS (
    SELECT account, plan, plan_name,
           ROW_NUMBER() OVER (
               PARTITION BY account, plan
               ORDER BY COALESCE(started_at, 0) DESC, {d.codepoint("plan_name")} DESC
           ) AS n
    FROM subscription_states
    WHERE plan IS NOT NULL AND plan_name IS NOT NULL
)
SELECT b.account, b.reporting_currency, b.segment,
       g.plan, l.plan_name, g.billing_interval,
       g.currency AS segment_currency,
       {d.json_text("g.metadata")} AS segment_metadata,
       b.month,
       b.mrr_end - ({mrr}) AS mrr_start_minor,
       b.mrr_end AS mrr_end_minor,
{amounts},
       b.customers_end - ({net}) AS customers_start,
       b.customers_end,
{counts}
FROM balances AS b
LEFT JOIN metrics_segments AS g
  ON g.account = b.account AND g.reporting_currency = b.reporting_currency
 AND g.segment = b.segment
LEFT JOIN labels AS l ON l.account = b.account AND l.plan = g.plan AND l.n = 1
"""


def failed_payments(d: Dialect) -> str:
    return f"""
SELECT account, invoice_id, customer_id, subscription_id, currency,
       amount_due AS amount_due_minor,
       outcome AS status, lost_reason, attempts,
       {d.unix("first_failure_at")} AS first_failed_at,
       {d.unix("last_failure_at")} AS last_failed_at,
       {d.unix("next_retry_at")} AS next_retry_at,
       {d.unix("recovered_at")} AS recovered_at,
       {d.unix("closed_at")} AS closed_at,
       time_to_recover_s AS time_to_recover_seconds,
       recovered_on_attempt, decline_code, failure_message, billing_reason,
       action_required,
       {d.json_text("event_ids")} AS event_ids
FROM payment_episodes
"""


def closed_periods(d: Dialect) -> str:
    figures = ",\n".join(
        f"       {d.json_int('c.figures', key)} AS {name},\n"
        f"       {d.json_int('c.figures_at_close', key)} AS {name}_at_close"
        for key, name in FIGURES
    )
    return f"""
SELECT c.account, c.reporting_currency, c.period AS month,
       {d.instant("c.closed_at")} AS closed_at,
       {d.unix("c.as_of")} AS as_of,
       COALESCE(r.restatements, 0) AS restatements,
       {d.instant("r.last_detected_at")} AS last_restated_at,
{figures}
FROM closed_periods AS c
LEFT JOIN (
    SELECT account, reporting_currency, period,
           COUNT(*) AS restatements, MAX(detected_at) AS last_detected_at
    FROM restatements
    GROUP BY account, reporting_currency, period
) AS r
  ON r.account = c.account AND r.reporting_currency = c.reporting_currency
 AND r.period = c.period
"""


def restatements(d: Dialect) -> str:
    named = "\n".join(f"            WHEN '{key}' THEN '{name}'" for key, name in FIGURES)
    old, new = d.array_item("j.value", 0), d.array_item("j.value", 1)
    return f"""
SELECT r.id AS restatement_id, r.account, r.reporting_currency, r.period AS month,
       {d.instant("r.detected_at")} AS detected_at,
       CASE j.key
{named}
            ELSE j.key END AS figure,
       {old} AS old_value,
       {new} AS new_value,
       {new} - {old} AS difference,
       {d.json_text("r.event_ids")} AS event_ids
FROM restatements AS r, {d.members("r.changes", "j")}
"""


# In creation order: bi_customers reads bi_customer_mrr.
VIEWS: dict[str, Callable[[Dialect], str]] = {
    "bi_customer_mrr": customer_mrr,
    "bi_customers": customers,
    "bi_subscriptions": subscriptions,
    "bi_movements": movements,
    "bi_movement_events": movement_events,
    "bi_mrr_monthly": mrr_monthly,
    "bi_failed_payments": failed_payments,
    "bi_closed_periods": closed_periods,
    "bi_restatements": restatements,
}


def upgrade() -> None:
    dialect = Dialect(op.get_bind().dialect.name)
    for name, select in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {select(dialect).strip()}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
