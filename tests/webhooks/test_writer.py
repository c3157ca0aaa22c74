"""The receiver's group-commit writer, on databases of its own (it commits for real)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import create_engine, event, make_url, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from service.db import create_db_engine
from service.webhooks.models import StripeEvent
from service.webhooks.schemas import parse_event
from service.webhooks.service import event_row
from service.webhooks.writer import EventWriter, LoopEventWriter, Writer
from tests.conftest import Database
from tests.signing import event_body
from tests.webhooks.test_endpoints import make_event


def row(event_id: str, account: str | None = None) -> dict[str, Any]:
    body = event_body(make_event(event_id, account=account))
    return event_row(body, parse_event(body))


def stored(db: Database) -> list[tuple[str, str]]:
    with Session(db.engine) as session:
        return sorted(session.execute(select(StripeEvent.account, StripeEvent.event_id)).all())


class WriteLock:
    """Holds the database's write lock from another connection, so that the writer's
    first transaction waits and the requests arriving meanwhile queue up behind it."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.release_sql = "ROLLBACK"
        if db.backend == "sqlite":
            self.conn: Any = sqlite3.connect(
                db.url.removeprefix("sqlite:///"), isolation_level=None
            )
            self.conn.execute("BEGIN IMMEDIATE")
        else:
            self.engine = create_engine(db.url)
            self.conn = self.engine.connect()
            self.conn.execute(text("LOCK TABLE stripe_events IN EXCLUSIVE MODE"))

    def release(self) -> None:
        if self.db.backend == "sqlite":
            self.conn.execute("ROLLBACK")
            self.conn.close()
        else:
            self.conn.rollback()
            self.conn.close()
            self.engine.dispose()


@pytest.fixture(params=[1, 2, "loop"], ids=["1-thread", "2-threads", "in-loop"])
def writer(fresh_database: Database, request: pytest.FixtureRequest) -> Iterator[Writer]:
    w: Writer
    if request.param == "loop":
        if fresh_database.backend != "postgresql":
            pytest.skip("the in-loop writer is PostgreSQL's")
        w = LoopEventWriter(fresh_database.engine)
    else:
        w = EventWriter(fresh_database.engine, threads=request.param)
    yield w
    asyncio.run(w.aclose())


class Commits:
    """How many transactions stored the rows: on PostgreSQL the distinct xmin of the
    rows (whichever driver wrote them), on SQLite the engine's commits."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.seen: list[int] = []
        if db.backend == "sqlite":
            event.listen(db.engine, "commit", lambda _conn: self.seen.append(1))

    def __len__(self) -> int:
        if self.db.backend == "sqlite":
            return len(self.seen)
        with self.db.engine.connect() as conn:
            return conn.scalar(text("SELECT count(DISTINCT xmin::text) FROM stripe_events")) or 0


class TestEventWriter:
    def test_concurrent_requests_share_commits_and_all_are_stored(
        self, fresh_database: Database, writer: Writer
    ):
        commits = Commits(fresh_database)
        rows = [row(f"evt_{i:04d}") for i in range(200)]

        async def deliver() -> list[int | None]:
            lock = WriteLock(fresh_database)
            pending = asyncio.gather(*(writer.store(r) for r in rows))
            await asyncio.sleep(0.3)  # every request queues behind the held lock
            lock.release()
            return await pending

        ids = asyncio.run(deliver())
        assert all(isinstance(i, int) for i in ids)
        assert len(set(ids)) == 200
        assert stored(fresh_database) == sorted(("", r["event_id"]) for r in rows)
        # The first batch waited on the lock; the other 199 rows came in at most a few.
        assert len(commits) <= 4

    def test_duplicates_in_a_batch_and_across_batches(
        self, fresh_database: Database, writer: Writer
    ):
        async def deliver() -> tuple[list[int | None], list[int | None]]:
            first = await asyncio.gather(
                writer.store(row("evt_a")),
                writer.store(row("evt_a")),
                writer.store(row("evt_a", account="acct_1")),
                writer.store(row("evt_b")),
            )
            again = await asyncio.gather(writer.store(row("evt_a")), writer.store(row("evt_c")))
            return first, again

        first, again = asyncio.run(deliver())
        # One event per (account, event id); the other deliveries are duplicates.
        assert [i is None for i in first] == [False, True, False, False]
        assert again[0] is None and again[1] is not None
        assert stored(fresh_database) == [
            ("", "evt_a"),
            ("", "evt_b"),
            ("", "evt_c"),
            ("acct_1", "evt_a"),
        ]

    def test_a_bad_row_fails_alone(self, fresh_database: Database, writer: Writer):
        bad = row("evt_bad") | {"source": "not-a-source"}

        async def deliver() -> list[Any]:
            lock = WriteLock(fresh_database)
            pending = asyncio.gather(
                writer.store(row("evt_1")),
                writer.store(bad),
                writer.store(row("evt_2")),
                return_exceptions=True,
            )
            await asyncio.sleep(0.3)
            lock.release()
            return await pending

        results = asyncio.run(deliver())
        assert isinstance(results[0], int) and isinstance(results[2], int)
        assert isinstance(results[1], Exception)
        assert stored(fresh_database) == [("", "evt_1"), ("", "evt_2")]

    def test_database_away_fails_the_batch_then_recovers(
        self, fresh_database: Database, writer: Writer
    ):
        lock = WriteLock(fresh_database)
        if fresh_database.backend == "sqlite":
            event.listen(
                fresh_database.engine,
                "connect",
                lambda dbapi_conn, _rec: dbapi_conn.execute("PRAGMA busy_timeout = 200"),
            )
        else:

            def short_lock_timeout(dbapi_conn: Any, _rec: Any) -> None:
                # Committed, or the pool's reset-on-return would roll the SET back.
                dbapi_conn.execute("SET lock_timeout = '200ms'")
                dbapi_conn.commit()

            event.listen(fresh_database.engine, "connect", short_lock_timeout)
            if isinstance(writer, LoopEventWriter):
                # Its connection is psycopg's own, not the engine's: the option in the URL.
                url = make_url(fresh_database.url)
                options = f"{url.query['options']} -c lock_timeout=200ms"
                writer = LoopEventWriter(
                    create_db_engine(url.update_query_dict({"options": options}))
                )
        fresh_database.engine.dispose()

        async def deliver(ids: list[str]) -> list[Any]:
            return await asyncio.gather(
                *(writer.store(row(i)) for i in ids), return_exceptions=True
            )

        failed = asyncio.run(deliver(["evt_1", "evt_2"]))
        assert all(isinstance(r, OperationalError) for r in failed), failed
        lock.release()
        assert stored(fresh_database) == []
        # The writer thread survives: Stripe's retries are stored.
        retried = asyncio.run(deliver(["evt_1", "evt_2"]))
        assert all(isinstance(r, int) for r in retried)
        assert stored(fresh_database) == [("", "evt_1"), ("", "evt_2")]
        asyncio.run(writer.aclose())  # the fixture closes its own

    def test_stop_writes_what_is_queued(self, fresh_database: Database, writer: Writer):
        async def deliver() -> list[int | None]:
            tasks = [asyncio.ensure_future(writer.store(row(f"evt_{i}"))) for i in range(20)]
            await asyncio.sleep(0)  # every row handed to the writer
            await writer.aclose()
            return await asyncio.gather(*tasks)

        assert all(isinstance(i, int) for i in asyncio.run(deliver()))
        assert len(stored(fresh_database)) == 20
