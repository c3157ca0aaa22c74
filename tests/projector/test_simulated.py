"""The ledger against the simulator's independent truth, at scale (issue 4).

≥ 10,000 simulated Stripe events, delivered shuffled with duplicates and projected as they
arrive (incremental), must give exactly the simulator's movements; `rebuild` must then
give the identical ledger.
"""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.ledger.models import MrrMovement
from service.projector.service import project_pending, rebuild
from service.settings import LedgerOptions
from service.webhooks.schemas import parse_event
from service.webhooks.service import store_event
from sim.simulate import event_bytes, simulate

OPTIONS = LedgerOptions()


def ledger(session: Session) -> list[tuple]:
    rows = session.scalars(
        select(MrrMovement).order_by(MrrMovement.customer_id, MrrMovement.currency, MrrMovement.day)
    )
    return [
        (
            m.customer_id,
            m.day,
            m.currency,
            m.movement,
            m.from_mrr,
            m.to_mrr,
            m.event_ids,
            m.churn_reason,
            m.churn_feedback,
        )
        for m in rows
    ]


# The ≥ 10,000-event run uses the current shape; the legacy shape gets a smaller account
# (the shapes differ in parsing, which is covered event by event elsewhere).
@pytest.mark.parametrize(
    ("shape", "customers", "at_least"), [("current", 800, 10_000), ("legacy", 250, 3_000)]
)
def test_simulated_account_matches_truth_and_rebuild(
    db_session: Session, shape: str, customers: int, at_least: int
):
    sim = simulate(customers=customers, months=12, seed=11, shape=shape)
    assert len(sim.events) >= at_least
    now = sim.until + 86_400
    rng = random.Random(3)
    deliveries = list(sim.events) + rng.sample(sim.events, k=len(sim.events) // 20)
    rng.shuffle(deliveries)

    chunk = len(deliveries) // 3 + 1
    for start in range(0, len(deliveries), chunk):
        for event in deliveries[start : start + chunk]:
            body = event_bytes(event)
            store_event(db_session, body, parse_event(body))
        while project_pending(db_session, OPTIONS, limit=1000, now=now):
            pass

    incremental = ledger(db_session)
    truth = sorted(
        (m.customer_id, m.day, m.currency, m.from_mrr, m.to_mrr) for m in sim.truth.movements()
    )
    got = sorted((c, d, cur, frm, to) for c, d, cur, _, frm, to, *_ in incremental)
    assert got == truth

    rebuild(db_session, OPTIONS, now=now, batch=500)
    assert ledger(db_session) == incremental
