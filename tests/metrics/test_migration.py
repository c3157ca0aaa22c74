"""Migration 0006: metrics_periods gains the period flows; derived rows are recomputed."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from jobs.metrics.refresh import refresh
from service.db import downgrade, upgrade
from service.metrics.models import MetricsPeriod, MetricsRefresh
from tests.conftest import Database
from tests.metrics.scenario import TODAY, seed_scenario


class TestMigration0006:
    def test_old_rows_are_dropped_and_recomputed(self, fresh_database: Database):
        engine = fresh_database.engine
        # The ledger is seeded through today's models, so at head; going down to 0005 keeps
        # it (later migrations add to it) and empties the metric tables 0006 narrows.
        with Session(engine) as session:
            seed_scenario(session)
            session.commit()
        downgrade(engine, "0005")
        with Session(engine) as session:
            # What the 0005 job left: turnover only, and a refresh that vouches for it.
            session.execute(
                text(
                    'INSERT INTO metrics_periods (account, reporting_currency, segment, "interval",'
                    " period_start, customers_lost, customers_gained)"
                    " VALUES ('', 'usd', 'seg', 'month', :day, 1, 2)"
                ),
                {"day": date(2025, 1, 1)},
            )
            session.execute(
                text(
                    "INSERT INTO metrics_refreshes (account, refreshed_at, through, ledger_rows)"
                    " VALUES ('', :now, :through, 22)"
                ),
                {"now": datetime.now(UTC), "through": TODAY},
            )
            session.commit()
        upgrade(engine)
        with Session(engine) as session:
            # Never computed, rather than flows of 0 that the API would take for real.
            assert session.scalar(select(func.count()).select_from(MetricsPeriod)) == 0
            assert session.scalar(select(func.count()).select_from(MetricsRefresh)) == 0
            assert refresh(session, today=TODAY).accounts == [""]
            session.commit()
            days = session.scalars(
                select(MetricsPeriod.customer_days).where(MetricsPeriod.interval == "month")
            ).all()
            assert sum(days) > 0

    def test_downgrade_empties_the_tables_it_narrows(self, fresh_database: Database):
        engine = fresh_database.engine
        with Session(engine) as session:
            seed_scenario(session)
            refresh(session, today=TODAY)
            session.commit()
        downgrade(engine, "0005")
        with Session(engine) as session:
            count = "SELECT count(*) FROM metrics_periods"
            assert session.execute(text(count)).scalar() == 0
            assert session.execute(text("SELECT count(*) FROM metrics_refreshes")).scalar() == 0
