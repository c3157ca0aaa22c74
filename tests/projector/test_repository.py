"""ProjectionRepository's reads that run on every drain pass, whatever the backlog."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, insert, text
from sqlalchemy.orm import Session

from service.ledger.models import LedgerCustomer
from service.projector.repository import ProjectionRepository
from tests.conftest import Database


class TestDueCustomers:
    def _seed(self, session: Session) -> None:
        rows = [{"account": "", "customer_id": f"cus_{i:04d}"} for i in range(300)]
        # Three due (at 50, 20, 20), one due later, the rest with nothing scheduled.
        due = {"cus_0290": 50, "cus_0007": 20, "cus_0100": 20, "cus_0001": 5000}
        for row in rows:
            row["next_change_at"] = due.get(row["customer_id"])
        rows.append({"account": "acct_b", "customer_id": "cus_0000", "next_change_at": 30})
        session.execute(insert(LedgerCustomer), rows)
        session.flush()

    def test_the_longest_due_first_up_to_the_limit(self, db_session: Session):
        self._seed(db_session)
        repo = ProjectionRepository(db_session)
        assert repo.due_customers(100, 10) == [
            ("", "cus_0007"), ("", "cus_0100"), ("acct_b", "cus_0000"), ("", "cus_0290"),
        ]  # fmt: skip
        assert repo.due_customers(100, 2) == [("", "cus_0007"), ("", "cus_0100")]
        assert repo.due_customers(19, 10) == []

    def test_sqlite_seeks_the_schedule_index(self, db_session: Session):
        """Not a walk of every customer: on SQLite (no statistics) a primary-key order
        made the planner scan ledger_customers whole on every pass."""
        if db_session.get_bind().dialect.name != "sqlite":
            return  # PostgreSQL plans a table this small by cost: nothing to pin
        self._seed(db_session)
        seen: list[tuple[str, Any]] = []
        connection = db_session.connection()

        def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            seen.append((statement, params))

        event.listen(connection, "before_cursor_execute", capture)
        try:
            ProjectionRepository(db_session).due_customers(100, 10)
        finally:
            event.remove(connection, "before_cursor_execute", capture)
        [(statement, params)] = seen
        plan = [
            str(r[-1])
            for r in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
        ]
        assert any("SEARCH ledger_customers USING INDEX" in line for line in plan), plan
        assert not any(line.startswith("SCAN ledger_customers") for line in plan), plan


class TestAnalyzeStale:
    """PostgreSQL: tables changed by enough rows since their statistics are analyzed;
    the others, and SQLite, are left alone."""

    def test_analyzes_what_changed_a_lot_and_only_that(self, fresh_database: Database):
        engine = fresh_database.engine
        postgres = engine.dialect.name == "postgresql"
        with Session(engine) as session:
            rows = [{"account": "", "customer_id": f"cus_{i:05d}"} for i in range(1500)]
            session.execute(insert(LedgerCustomer), rows)
            session.execute(insert(LedgerCustomer), [{"account": "a", "customer_id": "c"}])
            if postgres:
                # Statistics reach other sessions when a backend flushes them.
                session.execute(text("SELECT pg_stat_force_next_flush()"))
            session.commit()
        with Session(engine) as session:
            analyzed = ProjectionRepository(session).analyze_stale()
            session.commit()
        assert analyzed == (["ledger_customers"] if postgres else [])
        if not postgres:
            return
        with Session(engine) as session:
            when = session.scalar(
                text(
                    "SELECT last_analyze FROM pg_stat_user_tables"
                    " WHERE schemaname = current_schema() AND relname = 'ledger_customers'"
                )
            )
            assert when is not None
            # Fresh now: nothing left to do.
            assert ProjectionRepository(session).analyze_stale() == []
