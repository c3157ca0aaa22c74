"""Poison events (issue 16): an event whose projection keeps failing is set aside as a
dead letter with its reason, and its customer is projected from its other events, on
both engines; replaying puts it back."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.projector.service import project_pending
from service.settings import LedgerOptions
from service.webhooks.models import QueuedEvent
from service.webhooks.repository import StripeEventRepository
from tests.factories import item, price_payload
from tests.ledger.scenario import NOW, Scenario, d, day

OPTIONS = LedgerOptions(max_attempts=3)
# Customer ids of this module only: PostgreSQL advisory locks are database-wide, and a
# test of another schema holding "cus_1" would make the drain skip ours.
CUS1, CUS2 = f"cus_dl1{uuid.uuid4().hex[:8]}", f"cus_dl2{uuid.uuid4().hex[:8]}"
POISON = 10**25  # unit_amount: MRR past BIGINT, refused by both engines


def drain(session: Session, rounds: int = 6) -> int:
    done = 0
    for _ in range(rounds):
        done += project_pending(session, OPTIONS, now=NOW)
    session.flush()
    return done


def poisoned(session: Session) -> Scenario:
    """cus_1: created (1000), then a poison update, then a valid update to 3000."""
    s = Scenario(session, OPTIONS)
    s.sub("created", day(0), customer=CUS1, items=[item(price_payload(unit_amount=1000))])
    s.store()
    drain(session)
    s.events.clear()
    s.sub("updated", day(5), customer=CUS1, items=[item(price_payload(unit_amount=POISON))])
    s.sub("updated", day(10), customer=CUS1, items=[item(price_payload(unit_amount=3000))])
    s.sub("created", day(1), id="sub_2", customer=CUS2,
          items=[item(price_payload(unit_amount=500))])  # fmt: skip
    s.store()
    return s


class TestDeadLetters:
    def test_poison_is_set_aside_and_the_customer_projected(self, db_session: Session):
        s = poisoned(db_session)
        drain(db_session)
        dead = db_session.scalars(select(QueuedEvent).where(QueuedEvent.dead_at.is_not(None)))
        dead = list(dead)
        assert len(dead) == 1
        assert dead[0].customer_id == CUS1 and dead[0].last_error
        # One line naming the cause, without the statement or its parameters.
        assert "INSERT" not in dead[0].last_error and "[SQL" not in dead[0].last_error
        assert "range" in dead[0].last_error or "too large" in dead[0].last_error
        # The valid later update of cus_1 counts; the other customer never waited.
        assert s.subscription_mrr() == 3000
        assert s.rows(CUS2) == [(d(1), "new", 0, 500, "usd")]
        assert [r[1:4] for r in s.rows(CUS1)] == [("new", 0, 1000), ("expansion", 1000, 3000)]
        repo = StripeEventRepository(db_session)
        assert repo.count_unhandled() == 0  # a dead letter is no backlog
        assert repo.count_dead() == {"": 1}
        (row,) = repo.dead_letters(None, 10)
        assert row.type == "customer.subscription.updated" and row.created == day(5)

    def test_not_before_the_attempts_are_spent(self, db_session: Session):
        poisoned(db_session)
        project_pending(db_session, OPTIONS, now=NOW)  # attempt 1 of 3
        repo = StripeEventRepository(db_session)
        assert repo.count_dead() == {}
        assert repo.count_unhandled() == 3 - 1  # cus_2 projected, cus_1's two wait

    def test_rebuild_agrees_with_the_drain(self, db_session: Session):
        from service.projector.service import rebuild

        s = poisoned(db_session)
        drain(db_session)
        before = s.rows()
        db_session.commit()
        rebuild(db_session, OPTIONS, now=NOW)
        assert s.rows() == before

    def test_replay_requeues_and_it_dies_again(self, db_session: Session):
        poisoned(db_session)
        drain(db_session)
        repo = StripeEventRepository(db_session)
        assert repo.requeue_dead() == 1
        assert repo.count_dead() == {} and repo.count_unhandled() == 1
        drain(db_session)
        assert repo.count_dead() == {"": 1}
        assert repo.count_unhandled() == 0


ADMIN = "test_admin_key_0123456789"


class TestVisible:
    def test_admin_endpoint_and_gauge(self, app, client, db_session: Session):
        from tests.conftest import API_KEY, make_settings

        app.state.settings = make_settings(app.state.settings.database_url, admin_api_keys=ADMIN)
        poisoned(db_session)
        drain(db_session)
        db_session.commit()
        url = "/v1/admin/dead-letters"
        assert client.get(url, headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 403
        body = client.get(url, headers={"Authorization": f"Bearer {ADMIN}"}).json()
        assert body["total"] == 1
        (letter,) = body["data"]
        assert (letter["customer_id"], letter["type"], letter["attempts"]) == (
            CUS1,
            "customer.subscription.updated",
            OPTIONS.max_attempts,
        )
        assert letter["event_id"].startswith("evt_") and letter["reason"]
        other = client.get(url + "?account=acct_x", headers={"Authorization": f"Bearer {ADMIN}"})
        assert other.json() == {"total": 0, "data": []}


class TestGauge:
    def test_counts_per_account(self, db_session: Session):
        from prometheus_client import CollectorRegistry, generate_latest

        from service.webhooks.collector import DeadLetterCollector

        poisoned(db_session)
        drain(db_session)
        registry = CollectorRegistry()
        registry.register(DeadLetterCollector(lambda: _Borrowed(db_session)))  # type: ignore[arg-type]
        text = generate_latest(registry).decode()
        assert 'churn_ledger_dead_letter_events{account=""} 1.0' in text


class _Borrowed:
    """The test's session as a context manager that leaves it open."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __enter__(self) -> Session:
        return self.session

    def __exit__(self, *exc: object) -> None:
        return None


class TestReplayCommand:
    def test_lists_and_requeues(self, fresh_database, monkeypatch):
        from typer.testing import CliRunner

        from service.cli import app as cli
        from service.settings import get_settings

        with Session(fresh_database.engine) as session:
            poisoned(session)
            drain(session)
            session.commit()
        monkeypatch.setenv("DATABASE_URL", fresh_database.url)
        get_settings.cache_clear()
        try:
            listed = CliRunner().invoke(cli, ["dead-letters", "list"])
            replayed = CliRunner().invoke(cli, ["dead-letters", "replay"])
        finally:
            get_settings.cache_clear()
        assert listed.exit_code == 0, listed.output
        assert CUS1 in listed.output and "1 dead letter(s)" in listed.output
        assert replayed.exit_code == 0 and "requeued 1" in replayed.output
        with Session(fresh_database.engine) as session:
            repo = StripeEventRepository(session)
            assert repo.count_dead() == {} and repo.count_unhandled() == 1


class TestQuantityPast64Bits:
    def test_is_refused_not_read_as_one(self, db_session: Session):
        # orjson reads 2**64 + 5 as a float: it used to count as "no quantity", billed as 1.
        s = Scenario(db_session, OPTIONS)
        s.sub(
            "created",
            day(0),
            customer=CUS1,
            items=[item(price_payload(unit_amount=1000), 2**64 + 5)],
        )
        s.sub("created", day(0), id="sub_2", customer=CUS2,
              items=[item(price_payload(unit_amount=700), 2)])  # fmt: skip
        s.store()
        drain(db_session)
        (row,) = StripeEventRepository(db_session).dead_letters(None, 10)
        assert row.customer_id == CUS1 and "quantity" in row.last_error
        assert s.rows(CUS1) == []
        assert s.rows(CUS2) == [(d(0), "new", 0, 1400, "usd")]
