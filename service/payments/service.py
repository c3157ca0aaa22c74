"""Failed-payment reads. The projector writes the episodes (service.projector)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy.orm import Session

from service.kit import pagination
from service.kit.errors import ApiError
from service.kit.time import day_start
from service.ledger.schemas import Money
from service.payments.models import Outcome, PaymentEpisode
from service.payments.repository import PaymentRepository
from service.payments.schemas import (
    EpisodeDetailOut,
    EpisodeEventOut,
    EpisodeOut,
    EpisodePage,
)
from service.webhooks.repository import StripeEventRepository

# --- reads ------------------------------------------------------------------------------


def _ts(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def episode_out(ep: PaymentEpisode) -> EpisodeOut:
    return EpisodeOut(
        account=ep.account,
        invoice_id=ep.invoice_id,
        customer_id=ep.customer_id,
        subscription_id=ep.subscription_id,
        amount_due=Money.of(ep.amount_due, ep.currency),
        attempts=ep.attempts,
        first_failure_at=datetime.fromtimestamp(ep.first_failure_at, UTC),
        last_failure_at=datetime.fromtimestamp(ep.last_failure_at, UTC),
        next_retry_at=_ts(ep.next_retry_at),
        decline_code=ep.decline_code,
        failure_message=ep.failure_message,
        billing_reason=ep.billing_reason,
        action_required=ep.action_required,
        outcome=ep.outcome,
        lost_reason=ep.lost_reason,
        recovered_at=_ts(ep.recovered_at),
        closed_at=_ts(ep.closed_at),
        time_to_recover_s=ep.time_to_recover_s,
        recovered_on_attempt=ep.recovered_on_attempt,
    )


@dataclass(frozen=True, slots=True)
class EpisodeFilter:
    account: str = ""
    outcome: Outcome | None = None
    customer_id: str | None = None
    start: date | None = None  # first failure on or after this UTC day
    end: date | None = None  # ... and before this one


def _day_ts(day: date | None) -> int | None:
    return None if day is None else day_start(day)


def encode_cursor(ep: PaymentEpisode) -> str:
    return pagination.encode_cursor(ep.first_failure_at, ep.invoice_id)


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        at, invoice_id = pagination.decode_cursor(cursor, int, str)
    except pagination.InvalidCursor:
        raise ApiError(
            400, "invalid_request", "invalid `cursor`: pass back a `next_cursor` as is"
        ) from None
    return at, invoice_id


def _page(
    session: Session, f: EpisodeFilter, after: tuple[int, str] | None, limit: int
) -> Sequence[PaymentEpisode]:
    return PaymentRepository(session).page(
        f.account,
        outcome=f.outcome,
        customer_id=f.customer_id,
        start_ts=_day_ts(f.start),
        end_ts=_day_ts(f.end),
        after=after,
        limit=limit,
    )


def list_episodes(
    session: Session, f: EpisodeFilter, cursor: str | None, limit: int
) -> EpisodePage:
    after = decode_cursor(cursor) if cursor else None
    rows = _page(session, f, after, limit + 1)
    has_more = len(rows) > limit
    rows = rows[:limit]
    return EpisodePage(
        data=[episode_out(r) for r in rows],
        has_more=has_more,
        next_cursor=encode_cursor(rows[-1]) if has_more else None,
    )


def all_episodes(
    session: Session, f: EpisodeFilter, cursor: str | None, batch: int = 1000
) -> Iterator[EpisodeOut]:
    """Every matching episode from `cursor` on, in keyset batches (CSV exports). The
    cursor is checked at once (a 4xx before the body starts), the rows read as written."""
    first = decode_cursor(cursor) if cursor else None

    def rows(after: tuple[int, str] | None) -> Iterator[EpisodeOut]:
        while True:
            found = _page(session, f, after, batch)
            yield from (episode_out(r) for r in found)
            if len(found) < batch:
                return
            after = (found[-1].first_failure_at, found[-1].invoice_id)

    return rows(first)


def episode_detail(session: Session, account: str, invoice_id: str) -> EpisodeDetailOut | None:
    repo = PaymentRepository(session)
    ep = repo.get(account, invoice_id)
    if ep is None:
        return None
    events = StripeEventRepository(session).events_by_id(account, ep.event_ids)
    return EpisodeDetailOut(
        **episode_out(ep).model_dump(),
        event_ids=list(ep.event_ids),
        events=[
            EpisodeEventOut(
                event_id=e.event_id, type=e.type, created=datetime.fromtimestamp(e.created, UTC)
            )
            for e in events
        ],
    )
