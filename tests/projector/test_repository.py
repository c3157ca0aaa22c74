"""ProjectionRepository's reads that run on every drain pass, whatever the backlog."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, insert, text
from sqlalchemy.orm import Session

from service.ledger.models import LedgerCustomer
from service.projector.repository import ProjectionRepository
from service.webhooks.models import StripeEvent
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


class TestWithHistory:
    """Which customers have a long enough history to be projected incrementally."""

    def _seed(self, session: Session) -> None:
        updated, paid = "customer.subscription.updated", "invoice.paid"
        histories = {
            ("", "cus_a"): [updated] * 3,
            ("", "cus_b"): [updated] * 2 + [paid] * 5,  # payments are not ledger events
            ("", "cus_c"): [updated] * 9,
            ("", "cus_new"): [updated] * 9,  # not (yet) known to the ledger
            ("acct_b", "cus_b"): [updated] * 9,  # another account's cus_b
        }
        rows = [
            {
                "account": account, "event_id": f"evt_{account}_{customer}_{n}", "type": type_,
                "livemode": False, "created": 1_700_000_000 + n, "customer_id": customer,
                "source": "webhook", "body": b"{}", "received_at": datetime.now(UTC),
            }
            for (account, customer), types in histories.items()
            for n, type_ in enumerate(types)
        ]  # fmt: skip
        session.execute(insert(StripeEvent), rows)
        known = [k for k in histories if k[1] != "cus_new"]
        session.execute(
            insert(LedgerCustomer), [{"account": a, "customer_id": c} for a, c in known]
        )
        session.flush()

    def test_at_least_so_many_ledger_events_of_the_account(self, db_session: Session):
        self._seed(db_session)
        repo = ProjectionRepository(db_session)
        ids = ["cus_a", "cus_b", "cus_c", "cus_new", "cus_zzz"]
        types = ["customer.subscription.created", "customer.subscription.updated"]
        assert repo.with_history("", ids, types, 3) == {"cus_a", "cus_c"}
        assert repo.with_history("", ids, types, 4) == {"cus_c"}
        assert repo.with_history("", ids, types, 1) == {"cus_a", "cus_b", "cus_c"}
        assert repo.with_history("", ids, types, 10) == set()
        assert repo.with_history("acct_b", ids, types, 9) == {"cus_b"}
        assert repo.with_history("", ids, [*types, "invoice.paid"], 7) == {"cus_b", "cus_c"}
