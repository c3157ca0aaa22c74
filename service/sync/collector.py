"""The drift gauge: what the newest reconcile run of each account found.

Read from `reconcile_runs` at scrape time, so runs from the CLI, a cron job or any replica
all show up, not just the ones this process served.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.sync.repository import SyncRepository

log = logging.getLogger("churn_ledger.admin")


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "churn_ledger_reconcile_drifted_subscriptions",
            "Subscriptions whose ledger MRR differed from Stripe's at the last reconcile.",
            labels=["account"],
        ),
        GaugeMetricFamily(
            "churn_ledger_reconcile_drift_mrr",
            "Sum of |Stripe MRR − ledger MRR| at the last reconcile, minor units.",
            labels=["account", "currency"],
        ),
        GaugeMetricFamily(
            "churn_ledger_reconcile_last_run_timestamp_seconds",
            "Unix time the last reconcile compared at.",
            labels=["account"],
        ),
    )


class DriftCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Names only: registering must not touch the database.
        yield from _families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        drifted, mrr, last = _families()
        try:
            with self.sessions() as session:
                runs = SyncRepository(session).latest_runs()
        except SQLAlchemyError as exc:
            # /metrics must answer while the database is down (its own gauges say so).
            log.warning("drift gauge unavailable: %s", type(exc).__name__)
            runs = []
        for run in runs:
            drifted.add_metric([run.account], run.drifted)
            last.add_metric([run.account], run.as_of)
            for currency, amount in sorted(run.drift_mrr.items()):
                mrr.add_metric([run.account, currency], amount)
        yield from (drifted, mrr, last)
