"""The dead-letter gauge: events set aside because their projection kept failing.

Read from `projection_queue` at scrape time, so dead letters set aside by any projector
process (or replayed from the CLI) show up here, not just this process's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service.webhooks.repository import StripeEventRepository

log = logging.getLogger("churn_ledger.webhooks")


def _family() -> GaugeMetricFamily:
    return GaugeMetricFamily(
        "churn_ledger_dead_letter_events",
        "Events set aside after failing projection PROJECTOR_MAX_ATTEMPTS times, by account"
        " (GET /v1/admin/dead-letters lists them; `churn-ledger dead-letters replay`).",
        labels=["account"],
    )


class DeadLetterCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Names only: registering must not touch the database.
        yield _family()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = _family()
        try:
            with self.sessions() as session:
                counts = StripeEventRepository(session).count_dead()
        except SQLAlchemyError as exc:
            # /metrics must answer while the database is down.
            log.warning("dead-letter gauge unavailable: %s", type(exc).__name__)
            counts = {}
        for account, n in sorted(counts.items()):
            family.add_metric([account], n)
        yield family
