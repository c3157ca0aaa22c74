"""Plan names: the product name and price nickname a subscription's payload carries, in
every subscription shape, kept beside the price id (issue 17); both databases."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.ledger.models import SubscriptionState
from service.stripe_shapes.price import read_price
from tests.factories import SHAPES, Shape, item, price_payload
from tests.ledger.scenario import Scenario, day

PRO = {"id": "prod_pro", "object": "product", "name": "Pro", "active": True}


def _plan_of(session: Session) -> tuple[str | None, str | None]:
    state = session.scalars(select(SubscriptionState)).one()
    return state.plan, state.plan_name


class TestProjected:
    @pytest.mark.parametrize("shape", SHAPES)
    @pytest.mark.parametrize(
        ("product", "nickname", "expected"),
        [
            (PRO, "Monthly", "Pro · Monthly"),  # product expanded (an API read with expand)
            ("prod_pro", "Monthly", "Monthly"),  # what webhooks carry: the id only
            (PRO, None, "Pro"),
            (PRO, "Pro", "Pro"),  # the same text once
            ("prod_pro", None, None),
        ],
    )
    def test_name_beside_the_id(
        self, db_session: Session, shape: Shape, product, nickname, expected
    ):
        s = Scenario(db_session)
        price = price_payload(id="price_pro_m", product=product, nickname=nickname)
        s.sub("created", day(0), items=[item(price)], shape=shape)
        s.run()
        assert _plan_of(db_session) == ("price_pro_m", expected)

    def test_the_latest_snapshot_names_it(self, db_session: Session):
        s = Scenario(db_session)
        s.sub("created", day(0), items=[item(price_payload(id="p", nickname="Old"))])
        s.sub("updated", day(1), items=[item(price_payload(id="p", nickname="New"))])
        s.run()
        assert _plan_of(db_session) == ("p", "New")

    def test_a_long_name_is_kept_whole(self, db_session: Session):
        s = Scenario(db_session)
        long = "Enterprise " * 60  # 660 characters: Stripe allows far more than 255
        s.sub("created", day(0), items=[item(price_payload(id="p", nickname=long.strip()))])
        s.run()
        assert _plan_of(db_session) == ("p", long.strip())


class TestPlanObjects:
    def test_a_pre_2018_plan_carries_its_own_name(self):
        # Before API version 2018-02-05 a plan had `name` (and no product object).
        plan = {"id": "gold", "object": "plan", "amount": 2000, "currency": "usd",
                "interval": "month", "interval_count": 1, "name": "Gold"}  # fmt: skip
        price = read_price(plan)
        assert (price.id, price.product_name, price.nickname) == ("gold", "Gold", None)

    def test_a_price_name_field_is_not_a_product_name(self):
        # Only plans had `name`; on a price it would be something else.
        price = read_price({**price_payload(), "name": "x"})
        assert price.product_name is None
