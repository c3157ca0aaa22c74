"""LedgerRepository's reads that every metrics answer makes."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from service.ledger.repository import LedgerRepository
from tests.metrics.scenario import Step, add_series, d


def _seed(session: Session) -> None:
    # Converted usd rows all year round (the bulk of a real ledger); eur without a rate
    # from 10 Feb; gbp without a rate from 1 Jan, then converted from 1 Mar.
    for n in range(40):
        add_series(session, f"c_usd{n}", [Step(d(1 + n % 12, 1 + n % 28), 1000 + n)])
    add_series(session, "c_eur", [Step(d(2, 10), 9000, rate=None)], currency="eur")
    add_series(session, "c_gbp", [Step(d(1, 1), 4000, rate=None),
               Step(d(3, 1), 6000, rate="1.25")], currency="gbp")  # fmt: skip
    session.flush()


class TestUnconvertedCurrencies:
    @pytest.mark.parametrize(
        ("before", "expected"),
        [
            (d(1, 1), []),  # strictly before: gbp's first unconverted day is 1 Jan
            (d(1, 2), ["gbp"]),
            (d(2, 10), ["gbp"]),
            (d(2, 11), ["eur", "gbp"]),
            (date.max, ["eur", "gbp"]),
        ],
    )
    def test_currencies_with_unconverted_rows_before_the_day(
        self, db_session: Session, before: date, expected: list[str]
    ):
        _seed(db_session)
        repo = LedgerRepository(db_session)
        assert repo.unconverted_currencies("", "usd", before) == expected
        assert repo.unconverted_currencies("", "USD", before) == expected
        assert repo.unconverted_currencies("other", "usd", before) == []
        assert repo.unconverted_currencies("", "eur", before) == []

    def test_reads_the_partial_index_not_the_ledger(self, db_session: Session):
        """SQLite has no statistics (the service never runs ANALYZE there): with the day
        bound in WHERE it chose (account, day) and walked the whole ledger, ~0.75 s a
        metrics answer at 100,000 customers. Only the partial index may match."""
        if db_session.get_bind().dialect.name != "sqlite":
            pytest.skip("PostgreSQL plans from statistics")
        _seed(db_session)
        seen: list[tuple[str, tuple]] = []

        def capture(conn, cursor, statement, params, *_):  # type: ignore[no-untyped-def]
            if "delta_reporting IS NULL" in statement:
                seen.append((statement, params))

        conn = db_session.connection()
        event.listen(conn, "before_cursor_execute", capture)
        try:
            LedgerRepository(db_session).unconverted_currencies("", "usd", date.max)
        finally:
            event.remove(conn, "before_cursor_execute", capture)
        [(statement, params)] = seen
        plan = " ".join(
            str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
        )
        assert "ix_mrr_movements_unconverted" in plan, plan
