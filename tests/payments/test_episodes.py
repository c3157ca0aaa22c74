"""Hand-computed failed-payment episodes through the event store, on both databases and in
both invoice shapes (issue 6). Times are written out in seconds with their arithmetic."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from service.payments.models import LostReason, Outcome
from service.projector.service import rebuild
from tests.ledger.scenario import NOW, d, day
from tests.payments.factories import INVOICE_SHAPES
from tests.payments.scenario import PaymentScenario

F = day(30, 10)  # first failure: 2025-01-31 10:00 UTC
R1 = day(33, 10)  # retry 1 fails
R2 = day(38, 10) + 125  # retry 2 succeeds
R3 = day(45, 10)  # (4-failure scenario) retry 3 fails
CANCEL = day(45, 10) + 3600


@pytest.fixture(params=INVOICE_SHAPES)
def s(request: pytest.FixtureRequest, db_session: Session) -> PaymentScenario:
    scenario = PaymentScenario(db_session)
    scenario.shape = request.param
    return scenario


def recovered_on_retry_2(s: PaymentScenario) -> list[str]:
    """Initial charge fails, retry 1 fails, retry 2 (the third attempt) pays."""
    legacy = s.shape == "legacy"
    ids = [s.subscribe(day(0))]
    ids.append(s.fail(F, 1, R1, charge="ch_1" if legacy else None, payment_intent="pi_1"))
    ids.append(s.charge_failed(F + 2, id="ch_1"))
    ids.append(s.fail(R1, 2, R2, charge="ch_2" if legacy else None, payment_intent="pi_1"))
    ids.append(
        s.charge_failed(
            R1 + 2,
            id="ch_2",
            decline_code="try_again_later",
            message="Your card was declined. Try again later.",
        )
    )
    ids.append(s.paid(R2, 3, charge="ch_3" if legacy else None, payment_intent="pi_1"))
    return ids


class TestRecovered:
    def test_paid_on_retry_2(self, s: PaymentScenario):
        ids = recovered_on_retry_2(s)
        s.run()
        [episode] = s.episodes()
        assert episode == {
            "invoice_id": "in_1",
            "customer_id": "cus_1",
            "subscription_id": "sub_1",
            "currency": "usd",
            "amount_due": 4900,
            "attempts": 3,
            "first_failure_at": F,
            "last_failure_at": R1,
            "next_retry_at": None,
            # the latest linked decline: the one retry 2 had to overcome
            "decline_code": "try_again_later",
            "failure_message": "Your card was declined. Try again later.",
            "billing_reason": "subscription_cycle",
            "action_required": False,
            "outcome": Outcome.recovered,
            "lost_reason": None,
            "closed_at": R2,
            "recovered_at": R2,
            # (day 38 10:00 + 125 s) − (day 30 10:00) = 8 × 86400 + 125 = 691325 s
            "time_to_recover_s": 691_325,
            "recovered_on_attempt": 3,
            "event_ids": ids[1:],  # the subscription event is not the episode's
        }
        # recovered: no churn, MRR untouched
        assert s.rows() == [(d(0), "new", 0, 4900, "usd")]

    def test_open_until_paid_shows_next_retry(self, s: PaymentScenario):
        s.subscribe(day(0))
        s.fail(F, 1, R1)
        s.run()
        ep = s.episode()
        assert (ep.outcome, ep.next_retry_at, ep.closed_at, ep.time_to_recover_s) == (
            Outcome.open,
            R1,
            None,
            None,
        )

    def test_paid_seen_only_in_invoice_updated(self, s: PaymentScenario):
        s.subscribe(day(0))
        s.fail(F, 1, R1)
        # No invoice.paid subscribed: the status change still arrives as invoice.updated.
        s.invoice("updated", R1 + 60, status="paid", attempt_count=2, paid_at=R1, amount_paid=4900)
        s.run()
        ep = s.episode()
        # paid_at (R1) is the truth, not the event's time: 3 days = 259200 s
        assert (ep.outcome, ep.recovered_at, ep.time_to_recover_s) == (
            Outcome.recovered,
            R1,
            259_200,
        )

    def test_uncollectible_then_paid_is_recovered(self, s: PaymentScenario):
        s.subscribe(day(0))
        s.fail(F, 1)
        u = day(40)
        s.invoice("marked_uncollectible", u, status="uncollectible", marked_uncollectible_at=u)
        s.paid(day(50), 2, marked_uncollectible_at=u)
        s.run()
        ep = s.episode()
        # money came in: recovered, although it stopped being open when written off
        assert (ep.outcome, ep.lost_reason, ep.closed_at, ep.recovered_at) == (
            Outcome.recovered,
            None,
            u,
            day(50),
        )
        assert ep.recovered_on_attempt == 2


def four_failures_then_canceled(s: PaymentScenario, **cancel: object) -> None:
    s.subscribe(day(0))
    s.fail(F, 1, R1)
    s.fail(R1, 2, day(38, 10))
    s.fail(day(38, 10), 3, R3)
    s.fail(R3, 4, None)  # Stripe's last retry: no next attempt
    s.sub("deleted", CANCEL, status="canceled", canceled_at=CANCEL, ended_at=CANCEL, **cancel)


class TestLost:
    def test_four_failures_then_canceled_is_involuntary_churn(self, s: PaymentScenario):
        # What Stripe sends: past_due after the first failure, then a cancellation whose
        # reason is payment_failed.
        s.sub("updated", F + 60, status="past_due")
        four_failures_then_canceled(
            s, cancellation_details={"reason": "payment_failed", "feedback": None, "comment": None}
        )
        s.run()
        ep = s.episode()
        assert (ep.outcome, ep.lost_reason, ep.closed_at, ep.attempts, ep.next_retry_at) == (
            Outcome.lost,
            LostReason.subscription_canceled,
            CANCEL,
            4,
            None,
        )
        assert (ep.first_failure_at, ep.last_failure_at) == (F, R3)
        assert s.rows() == [(d(0), "new", 0, 4900, "usd"), (d(45), "churn", 4900, 0, "usd")]
        assert s.movement(d(45)).churn_reason == "involuntary"

    def test_canceled_on_request_during_open_episode_is_still_involuntary(self, s: PaymentScenario):
        # Nothing but the open episode says "payment": no past_due snapshot, and the
        # customer asked to cancel. Without the dunning window the ledger says voluntary.
        details = {"reason": "cancellation_requested", "feedback": "too_expensive", "comment": "x"}
        four_failures_then_canceled(s, cancellation_details=details)
        s.run()
        assert s.episode().lost_reason == LostReason.subscription_canceled
        churn = s.movement(d(45))
        assert (churn.churn_reason, churn.churn_feedback) == ("involuntary", "too_expensive")

    def test_canceled_after_recovery_is_voluntary(self, s: PaymentScenario):
        recovered_on_retry_2(s)
        details = {"reason": "cancellation_requested", "feedback": "too_expensive", "comment": None}
        s.sub("deleted", day(60), status="canceled", ended_at=day(60), cancellation_details=details)
        s.run()
        assert s.episode().outcome == Outcome.recovered
        assert s.movement(d(60)).churn_reason == "voluntary"

    def test_voided(self, s: PaymentScenario):
        s.subscribe(day(0))
        s.fail(F, 1, R1)
        voided = day(31, 9)
        s.invoice("voided", voided, status="void", voided_at=voided)
        s.run()
        ep = s.episode()
        assert (ep.outcome, ep.lost_reason, ep.closed_at, ep.next_retry_at) == (
            Outcome.lost,
            LostReason.voided,
            voided,
            None,
        )
        # the invoice is gone, the subscription is not: no churn
        assert s.rows() == [(d(0), "new", 0, 4900, "usd")]

    def test_marked_uncollectible(self, s: PaymentScenario):
        s.subscribe(day(0))
        s.fail(F, 1, R1)
        s.fail(R1, 2, None)
        u = day(40, 8)
        s.invoice("marked_uncollectible", u, status="uncollectible", marked_uncollectible_at=u)
        s.run()
        ep = s.episode()
        assert (ep.outcome, ep.lost_reason, ep.closed_at, ep.attempts) == (
            Outcome.lost,
            LostReason.uncollectible,
            u,
            2,
        )

    def test_void_in_the_same_second_as_cancellation_is_involuntary(self, s: PaymentScenario):
        # Stripe's "cancel and void" after the last retry: both at once.
        s.subscribe(day(0))
        s.fail(F, 1)
        s.invoice("voided", CANCEL, status="void", voided_at=CANCEL)
        s.sub("deleted", CANCEL, status="canceled", ended_at=CANCEL)
        s.run()
        assert s.episode().lost_reason == LostReason.voided  # the invoice's own fate first
        assert s.movement(d(45)).churn_reason == "involuntary"

    def test_cancellation_before_the_failure_does_not_end_it(self, s: PaymentScenario):
        # A final invoice that fails after the subscription ended stays open.
        s.subscribe(day(0))
        s.sub("deleted", day(20), status="canceled", ended_at=day(20))
        s.fail(day(21), 1, day(24), billing_reason="subscription_update")
        s.run()
        assert s.episode().outcome == Outcome.open
        assert s.movement(d(20)).churn_reason == "voluntary"


class TestOrderAndDuplicates:
    def expected(self, s: PaymentScenario) -> list[dict]:
        recovered_on_retry_2(s)
        s.run()
        return s.episodes()

    def test_reverse_arrival_projected_after_each_event(self, s: PaymentScenario, db_session):
        other = PaymentScenario(db_session)
        other.shape = s.shape
        recovered_on_retry_2(other)
        # stored and projected one at a time, newest first, into account acct_rev
        for envelope in reversed(other.events):
            other.store([{**envelope, "account": "acct_rev"}])
            other.project()
        reversed_eps = other.episodes("acct_rev")
        assert [e["invoice_id"] for e in reversed_eps] == ["in_1"]
        assert reversed_eps == self.expected(s)

    def test_duplicates_and_reprojection(self, s: PaymentScenario):
        ids = recovered_on_retry_2(s)
        s.store()
        s.store()  # every event delivered twice: stored once
        s.project()
        first = s.episodes()
        s.store([s.events[2]])  # a late duplicate of a charge.failed
        s.project()
        rebuild(s.session, s.options, now=NOW)  # and a full rebuild
        assert s.episodes() == first
        assert first[0]["event_ids"] == ids[1:]
        assert s.alerts() == [
            ("payment_episode.opened", "opened:in_1", F),
            ("payment_episode.recovered", "recovered:in_1", R2),
        ]
