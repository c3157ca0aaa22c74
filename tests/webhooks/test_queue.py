"""The projection queue: filled by the event store itself, emptied by projection only for
what was read (design §1), on both databases."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from service.projector.service import project_pending
from service.settings import LedgerOptions
from service.webhooks.models import QueuedEvent, StripeEvent
from service.webhooks.repository import StripeEventRepository
from service.webhooks.schemas import parse_event
from service.webhooks.service import event_row
from tests.factories import subscription_payload
from tests.signing import event_body

NOW = 1_800_000_000


def body_of(event_id: str, type_: str, obj: dict, created: int) -> bytes:
    event = {"id": event_id, "object": "event", "type": type_, "created": created}
    event |= {"api_version": "2025-03-31.basil", "livemode": False, "data": {"object": obj}}
    return event_body(event)


def stored(session: Session, event_id: str, type_: str, obj: dict, created: int) -> None:
    body = body_of(event_id, type_, obj, created)
    StripeEventRepository(session).insert_many_if_new([event_row(body, parse_event(body))])


def queued(session: Session) -> list[tuple[str, str]]:
    query = select(QueuedEvent.account, QueuedEvent.customer_id).order_by(QueuedEvent.id)
    return [(a, c) for a, c in session.execute(query)]


class TestFilling:
    def test_events_about_a_customer_are_queued_once(self, db_session: Session):
        sub = subscription_payload(customer="cus_A")
        stored(db_session, "evt_1", "customer.subscription.created", sub, 1_735_689_600)
        # A duplicate delivery is not stored again, nor queued again.
        stored(db_session, "evt_1", "customer.subscription.created", sub, 1_735_689_600)
        stored(db_session, "evt_2", "customer.updated", {"id": "cus_A", "object": "customer"}, 1)
        assert queued(db_session) == [("", "cus_A"), ("", "cus_A")]
        ids = set(db_session.scalars(select(QueuedEvent.id)))
        assert ids == set(db_session.scalars(select(StripeEvent.id)))

    def test_events_about_no_customer_are_not(self, db_session: Session):
        product = {"id": "prod_1", "object": "product", "name": "Pro"}
        stored(db_session, "evt_p", "product.updated", product, 1_735_689_600)
        assert db_session.scalar(select(func.count()).select_from(StripeEvent)) == 1
        assert queued(db_session) == []
        # Nothing to wait for: as of it at once.
        assert StripeEventRepository(db_session).newest_handled("") == 1_735_689_600

    def test_a_batch_of_many_rows_is_queued_whole(self, db_session: Session):
        rows = []
        for n in range(50):
            sub = subscription_payload(id=f"sub_{n}", customer=f"cus_{n % 7}")
            body = body_of(f"evt_{n}", "customer.subscription.created", sub, n + 1)
            rows.append(event_row(body, parse_event(body)))
        StripeEventRepository(db_session).insert_many_if_new(rows + rows[:10])
        assert len(queued(db_session)) == 50
        assert StripeEventRepository(db_session).count_unhandled() == 50


class TestEmptying:
    def test_projection_takes_what_it_read_off_the_queue(self, db_session: Session):
        sub = subscription_payload(customer="cus_A")
        stored(db_session, "evt_1", "customer.subscription.created", sub, 1_735_689_600)
        stored(db_session, "evt_2", "customer.subscription.created",
               subscription_payload(id="sub_B", customer="cus_B"), 1_735_689_601)  # fmt: skip
        repo = StripeEventRepository(db_session)
        assert repo.newest_handled("") is None  # nothing projected yet
        assert project_pending(db_session, LedgerOptions(), now=NOW) == 2
        assert queued(db_session) == []
        assert repo.newest_handled("") == 1_735_689_601

    def test_an_event_stored_after_the_read_stays_queued(self, db_session: Session):
        sub = subscription_payload(customer="cus_A")
        stored(db_session, "evt_1", "customer.subscription.created", sub, 1_735_689_600)
        repo = StripeEventRepository(db_session)
        before = repo.queued("", ["cus_A"])
        stored(db_session, "evt_2", "customer.subscription.updated", sub, 1_735_689_700)
        repo.dequeue(before)
        assert queued(db_session) == [("", "cus_A")]

    def test_oldest_waiting_customer_first(self, db_session: Session):
        # Customer ids in reverse order of arrival: the one waiting longest goes first.
        for n, customer in enumerate(["cus_Z", "cus_M", "cus_A"]):
            stored(db_session, f"evt_{n}", "customer.subscription.created",
                   subscription_payload(id=f"sub_{n}", customer=customer), n + 1)  # fmt: skip
        pending = StripeEventRepository(db_session).pending_customers(2, max_attempts=10)
        assert pending == [("", "cus_Z"), ("", "cus_M")]

    def test_oldest_waiting_first_across_pages_of_the_queue(self, db_session: Session):
        # cus_A's rows fill more than a page; cus_C's only row is a dead letter and
        # cus_E's has spent its attempts: neither is pending.
        dead = datetime(2026, 1, 1, tzinfo=UTC)
        rows = [{"id": i, "account": "", "customer_id": "cus_A"} for i in range(1, 2501)]
        rows += [
            {"id": 2501, "account": "acct_x", "customer_id": "cus_B"},
            {"id": 2502, "account": "", "customer_id": "cus_A"},
            {"id": 2503, "account": "", "customer_id": "cus_C", "dead_at": dead},
            {"id": 2504, "account": "", "customer_id": "cus_E", "attempts": 10},
            {"id": 2505, "account": "", "customer_id": "cus_D"},
            {"id": 2506, "account": "", "customer_id": "cus_B"},
        ]
        db_session.execute(insert(QueuedEvent), rows)
        repo = StripeEventRepository(db_session)
        assert repo.pending_customers(10, max_attempts=10) == [
            ("", "cus_A"), ("acct_x", "cus_B"), ("", "cus_D"), ("", "cus_B"),
        ]  # fmt: skip
        assert repo.pending_customers(2, max_attempts=10) == [("", "cus_A"), ("acct_x", "cus_B")]
        assert repo.pending_customers(1, max_attempts=10) == [("", "cus_A")]

    def test_failures_are_counted_on_the_queue(self, db_session: Session):
        sub = subscription_payload(customer="cus_A")
        stored(db_session, "evt_1", "customer.subscription.created", sub, 1_735_689_600)
        repo = StripeEventRepository(db_session)
        for _ in range(3):
            repo.record_failure("", "cus_A", "ValueError: boom")
        row = db_session.scalars(select(QueuedEvent)).one()
        assert (row.attempts, row.last_error) == (3, "ValueError: boom")
        assert repo.pending_customers(10, max_attempts=3) == []
        assert repo.pending_customers(10, max_attempts=4) == [("", "cus_A")]
