"""Helpers of the import-job tests: settings, a StripeApi on the mock, ledger rows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import respx
from sqlalchemy import select
from sqlalchemy.orm import Session

from jobs.sync.stripe_client import StripeApi, make_stripe_client
from service.kit.time import utc_day
from service.ledger.models import MrrMovement
from service.settings import Settings
from tests.conftest import make_settings
from tests.factories import T0
from tests.jobs.sync.account import build_account
from tests.jobs.sync.fake_stripe import BASE, FakeStripe

STRIPE_KEY = "sk_test_fake_0123456789"


def stripe_settings(database_url: str = "sqlite://", **overrides: object) -> Settings:
    # No SDK-level retries by default: they sleep for real; tests that need them ask.
    values: dict[str, object] = {"stripe_api_key": STRIPE_KEY, "stripe_max_network_retries": 0}
    values.update(overrides)
    return make_settings(database_url, **values)


class Sleeps(list[float]):
    """Stands in for time.sleep: records the waits, never sleeps."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make_api(sleeps: Sleeps, account: str | None = None, **settings: object) -> StripeApi:
    client = make_stripe_client(stripe_settings(**settings), account=account)
    return StripeApi(client, sleep=sleeps, max_attempts=4)


@contextmanager
def mocked_account(account: str = "") -> Iterator[FakeStripe]:
    fake = build_account(account)
    with respx.mock(base_url=BASE, assert_all_called=False) as router:
        fake.install(router)
        yield fake


def ledger_rows(session: Session, account: str = "") -> list[tuple[str, int, str, int, int]]:
    """(customer, day number since 2025-01-01, movement, from, to), as EXPECTED_LEDGER."""
    movements = session.scalars(
        select(MrrMovement)
        .where(MrrMovement.account == account)
        .order_by(MrrMovement.customer_id, MrrMovement.day)
    )
    return [
        (m.customer_id, (m.day - utc_day(T0)).days, m.movement.value, m.from_mrr, m.to_mrr)
        for m in movements
    ]
