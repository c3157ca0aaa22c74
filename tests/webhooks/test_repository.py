"""The event store's batch insert, the receiver's hot path, on both databases: the values
stored are the ones given, whatever the batch's size, and nothing is cut to fit; and the
drain's stream of a batch's events."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session

from service.webhooks.models import EventSource, StripeEvent
from service.webhooks.repository import StripeEventRepository
from tests.conftest import Database

RECEIVED = datetime(2026, 12, 3, 12, 0, 0, 123456, tzinfo=UTC)


def row(n: int, **fields: object) -> dict[str, object]:
    values: dict[str, object] = {
        "account": "acct_1" if n % 3 == 0 else "",
        "event_id": f"evt_{n:05d}",
        "type": "customer.subscription.updated" if n % 2 else "product.created",
        "api_version": None if n % 4 == 0 else "2025-03-31.basil",
        "livemode": n % 5 == 0,
        "created": 1_735_689_600 + n * 10**6,
        "object_type": "subscription" if n % 2 else None,
        "object_id": f"sub_{n}" if n % 2 else None,
        "customer_id": f"cus_{n % 11}" if n % 2 else None,
        "source": EventSource.backfill if n % 7 == 0 else EventSource.webhook,
        "body": b'{"id": "evt_%05d", "note": "\\u00e9\\u0000"}' % n,
        "received_at": RECEIVED + timedelta(microseconds=n),
    }
    return values | fields


def stored_rows(session: Session) -> dict[str, dict[str, object]]:
    events = session.scalars(select(StripeEvent)).all()
    return {e.event_id: {name: getattr(e, name) for name in row(0)} | {"id": e.id} for e in events}


class TestInsertManyIfNew:
    def test_the_values_stored_are_the_values_given(self, db_session: Session):
        rows = [row(n) for n in range(40)]
        ids = StripeEventRepository(db_session).insert_many_if_new(rows)
        got = stored_rows(db_session)
        assert len(got) == 40
        for given, row_id in zip(rows, ids, strict=True):
            stored = got[str(given["event_id"])]
            assert stored["id"] == row_id
            # SQLite hands datetimes back naive (in UTC): compare the instants.
            at = stored.pop("received_at")
            assert isinstance(at, datetime)
            assert at.replace(tzinfo=at.tzinfo or UTC) == given["received_at"]
            given = dict(given)
            del given["received_at"]
            assert stored == given | {"id": row_id}

    def test_more_rows_than_one_statement_holds(self, db_session: Session):
        # Past both engines' rows a statement (SQLite 500, PostgreSQL 1,000), with
        # repeats inside the batch and of rows stored before it.
        repo = StripeEventRepository(db_session)
        first = repo.insert_many_if_new([row(n) for n in range(5)])
        rows = [row(n) for n in range(2_100)] + [row(7), row(2_000)]
        ids = repo.insert_many_if_new(rows)
        assert ids[:5] == [None] * 5  # stored by the first batch
        assert ids[-2:] == [None, None]  # earlier in this one
        new = ids[5:-2]
        assert None not in new and len(set(new)) == len(new) == 2_095
        assert set(new).isdisjoint(i for i in first if i is not None)
        got = stored_rows(db_session)
        assert len(got) == 2_100
        assert all(got[str(r["event_id"])]["id"] == i for r, i in zip(rows[5:-2], new, strict=True))

    def test_an_over_long_value_is_refused_not_cut_short(self, db_session: Session, backend: str):
        if backend == "sqlite":
            pytest.skip("SQLite does not enforce VARCHAR lengths (the envelope does)")
        with pytest.raises(DBAPIError, match="too long"):
            StripeEventRepository(db_session).insert_many_if_new([row(1, event_id="e" * 256)])


class TestTransactions:
    """SQLite's insert runs on the driver's own connection: it must still be the
    caller's transaction where one is open, and commit by itself where none is."""

    def count(self, database: Database) -> int:
        with Session(database.engine) as session:
            return len(session.scalars(select(StripeEvent.id)).all())

    def test_in_a_session_it_is_rolled_back_with_the_session(self, fresh_database: Database):
        with Session(fresh_database.engine) as session:
            ids = StripeEventRepository(session).insert_many_if_new([row(n) for n in range(3)])
            assert None not in ids
            session.rollback()
        assert self.count(fresh_database) == 0
        with Session(fresh_database.engine) as session:
            StripeEventRepository(session).insert_many_if_new([row(n) for n in range(3)])
            session.commit()
        assert self.count(fresh_database) == 3

    def test_on_a_connection_without_a_transaction_it_commits_by_itself(
        self, fresh_database: Database, backend: str
    ):
        # The receiver's writer: PostgreSQL in autocommit, SQLite beginning none.
        with fresh_database.engine.connect() as conn:
            if backend == "postgresql":
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            ids = StripeEventRepository(conn).insert_many_if_new([row(n) for n in range(4)])
            assert None not in ids
            assert self.count(fresh_database) == 4  # seen by another connection at once

    def test_a_locked_database_raises_sqlalchemys_operational_error(
        self, fresh_database: Database, backend: str
    ):
        if backend != "sqlite":
            pytest.skip("SQLite's write lock")
        # The receiver answers OperationalError with a 503: the driver's own error
        # (sqlite3.OperationalError) would be a 500.
        blocker = sqlite3.connect(fresh_database.url.removeprefix("sqlite:///"))
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            with fresh_database.engine.connect() as conn:
                conn.connection.driver_connection.execute("PRAGMA busy_timeout = 50")
                with pytest.raises(OperationalError, match="locked") as raised:
                    StripeEventRepository(conn).insert_many_if_new([row(1)])
            assert isinstance(raised.value.orig, sqlite3.OperationalError)
            assert "evt_00001" not in str(raised.value)  # parameters stay out of errors
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert self.count(fresh_database) == 0


class TestEventsOf:
    """A drain batch's events: read by seeking its customers, whatever the store holds."""

    WANTED = [f"cus_w{n:02d}" for n in range(12)]

    def _seed(self, session: Session) -> None:
        others = [
            row(
                n,
                account="",
                customer_id=f"cus_o{n % 2000:04d}",
                type="customer.subscription.updated",
            )
            for n in range(20_000)
        ]
        wanted = [
            row(50_000 + n, account="", customer_id=self.WANTED[n % 12],
                type="customer.subscription.updated" if n % 3 else "invoice.paid")
            for n in range(60)
        ]  # fmt: skip
        repo = StripeEventRepository(session)
        for start in range(0, len(others), 1000):
            repo.insert_many_if_new(others[start : start + 1000])
        repo.insert_many_if_new(wanted)
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ANALYZE stripe_events"))

    def _stream(self, session: Session) -> list[tuple[str, str]]:
        rows = StripeEventRepository(session).events_of(
            "",
            self.WANTED[::2],
            contiguous=False,
            types=["customer.subscription.updated"],
            flagged_types=["invoice.paid"],
            flagged=["cus_w00"],
        )
        return [(r.customer_id, r.event_id) for r in rows]

    def test_the_customers_events_of_the_types_grouped_by_customer(self, db_session: Session):
        self._seed(db_session)
        got = self._stream(db_session)
        expected = sorted(
            (self.WANTED[n % 12], f"evt_{50_000 + n:05d}")
            for n in range(60)
            if n % 12 % 2 == 0 and (n % 3 or n % 12 == 0)
        )
        assert sorted(got) == expected
        customers = [c for c, _ in got]
        assert customers == sorted(customers)

    def test_postgresql_fetches_only_those_customers_rows(self, db_session: Session, backend: str):
        """The named cursor's plan: planned for its first rows, it walked the account's
        whole index in customer order to spare a sort, every stored event fetched."""
        if backend != "postgresql":
            pytest.skip("a PostgreSQL cursor's plan")
        self._seed(db_session)
        fetched = text(
            "SELECT coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0)"
            " FROM pg_stat_xact_user_tables WHERE relid = 'stripe_events'::regclass"
        )
        before = db_session.scalar(fetched)
        got = self._stream(db_session)
        assert len(got) == 25
        assert db_session.scalar(fetched) - before < 200  # of 20,060 stored
