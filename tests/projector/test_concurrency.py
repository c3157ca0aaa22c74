"""Concurrent projectors of one customer never double count (design §8)."""

from __future__ import annotations

import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.db import make_sessionmaker
from service.ledger.models import MrrMovement
from service.projector.service import project_customer
from service.settings import LedgerOptions
from tests.conftest import Database
from tests.factories import item, price_payload
from tests.ledger.scenario import NOW, Scenario, day


def test_parallel_projections_of_one_customer(fresh_database: Database):
    factory = make_sessionmaker(fresh_database.engine)
    with factory() as session:
        s = Scenario(session)
        s.sub("created", day(0))
        for n in range(1, 30):
            s.sub("updated", day(n), items=[item(price_payload(unit_amount=4900), n + 1)])
        s.store()
        session.commit()

    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def project() -> None:
        try:
            barrier.wait()
            for _ in range(3):
                with factory() as session:
                    project_customer(session, "", "cus_1", LedgerOptions(), now=NOW)
                    session.commit()
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=project) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Session(fresh_database.engine) as session:
        rows = session.scalars(select(MrrMovement).order_by(MrrMovement.day)).all()
        # One row per day: new on day 0, then 29 expansions of one seat each.
        assert len(rows) == 30
        assert [r.movement for r in rows[:2]] == ["new", "expansion"]
        assert sum(r.delta for r in rows) == 30 * 4900
        count = session.scalar(select(func.count(func.distinct(MrrMovement.day))))
        assert count == 30
