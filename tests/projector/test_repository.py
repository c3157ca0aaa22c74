"""ProjectionRepository's reads that run on every drain pass, whatever the backlog."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, insert
from sqlalchemy.orm import Session

from service.ledger.models import LedgerCustomer
from service.projector.repository import ProjectionRepository


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
