"""Fixtures of the import-job tests: a mocked Stripe account and a StripeApi on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobs.sync.stripe_client import StripeApi
from tests.jobs.sync.fake_stripe import FakeStripe
from tests.jobs.sync.helpers import Sleeps, make_api, mocked_account


@pytest.fixture
def fake() -> Iterator[FakeStripe]:
    with mocked_account() as account:
        yield account


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def api(fake: FakeStripe, sleeps: Sleeps) -> StripeApi:
    return make_api(sleeps)
