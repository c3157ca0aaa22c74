"""`among` and `in_values`: the rows of `column IN (values)` on both engines, whatever
the number of values (past SQLite's and the chunk's limits)."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.kit.sql import IN_CHUNK, among, in_values
from service.webhooks.models import QueuedEvent

Q = QueuedEvent.__table__


@pytest.fixture
def queue(db_session: Session) -> Session:
    db_session.execute(
        Q.insert(),
        [{"id": i, "account": "", "customer_id": f"cus_{i:05d}"} for i in range(1, 3001)],
    )
    return db_session


@pytest.mark.parametrize("count", [0, 1, IN_CHUNK, 2 * IN_CHUNK + 1])
def test_among_reads_and_deletes_exactly_those(queue: Session, count: int):
    # Every other row, and ids that are not there: only the stored ones answer.
    ids = list(range(2, 2 * count + 1, 2)) + [10_000 + i for i in range(count)]
    customers = [f"cus_{i:05d}" for i in ids]
    read = [
        row_id
        for where in among(queue, Q.c.customer_id, customers)
        for row_id in queue.scalars(select(Q.c.id).where(where))
    ]
    assert sorted(read) == [i for i in ids if i <= 3000]
    for where in among(queue, Q.c.id, ids):
        queue.execute(Q.delete().where(where))
    left = set(queue.scalars(select(Q.c.id)))
    assert left == set(range(1, 3001)) - set(ids)


def test_statements_per_engine(queue: Session):
    values = list(range(2 * IN_CHUNK + 1))
    statements = len(list(among(queue, Q.c.id, values)))
    # PostgreSQL: one array parameter for all; SQLite: an IN list per chunk.
    assert statements == (1 if queue.get_bind().dialect.name == "postgresql" else 3)
    assert list(among(queue, Q.c.id, [])) == []


def test_in_values_is_one_predicate(queue: Session):
    where = in_values(queue, Q.c.customer_id, ["cus_00001", "cus_00003", "nope"])
    assert sorted(queue.scalars(select(Q.c.id).where(where))) == [1, 3]
    assert list(queue.scalars(select(Q.c.id).where(in_values(queue, Q.c.id, [])))) == []
