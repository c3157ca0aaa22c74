"""Prices and coupons fetched on demand, so that stored snapshots can be priced.

List endpoints cannot expand deep enough for everything MRR needs: a subscription item's
price `tiers` (`data.items.data.price.tiers` is five levels; Stripe allows four), the
coupon of an item-level discount, or the price behind an invoice line, which current API
versions give as a bare id. Each distinct one is retrieved once per run and cached.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jobs.sync.stripe_client import StripeApi
from service.stripe_shapes.fields import as_mapping, list_data
from service.stripe_shapes.invoice_lines import BilledLine

PRICE_EXPAND = {"expand": ["tiers", "currency_options"]}


class Catalog:
    def __init__(self, api: StripeApi) -> None:
        self.api = api
        self._prices: dict[str, dict[str, Any] | None] = {}
        self._coupons: dict[str, dict[str, Any] | None] = {}

    def price(self, price_id: str, *, plan: bool = False) -> dict[str, Any] | None:
        key = f"{'plan' if plan else 'price'}:{price_id}"
        if key not in self._prices:
            path = f"/v1/{'plans' if plan else 'prices'}/{price_id}"
            params = {"expand": ["tiers"]} if plan else PRICE_EXPAND
            self._prices[key] = self.api.retrieve(path, params)
        return self._prices[key]

    def learn_price(self, price: Mapping[str, Any]) -> None:
        """Remember a complete price seen in a listing (saves a retrieve for lines)."""
        price_id = price.get("id")
        if isinstance(price_id, str) and not _needs_more(price, None):
            self._prices.setdefault(f"price:{price_id}", dict(price))

    def complete_price(self, price: Mapping[str, Any], currency: str | None) -> Mapping[str, Any]:
        """The price with the tiers and currency options MRR needs, when it lacks them."""
        price_id = price.get("id")
        if not isinstance(price_id, str) or not _needs_more(price, currency):
            return price
        full = self.price(price_id, plan=price.get("object") == "plan")
        return full if full is not None else price

    def line_price(self, line: BilledLine, currency: str | None) -> Mapping[str, Any] | None:
        """The price an invoice line billed: embedded (old versions) or by id (current)."""
        if line.price is not None:
            return self.complete_price(line.price, currency)
        if line.price_id is None:
            return None
        found = self.price(line.price_id)
        return self.complete_price(found, currency) if found is not None else None

    def coupon(self, coupon_id: str) -> dict[str, Any] | None:
        if coupon_id not in self._coupons:
            self._coupons[coupon_id] = self.api.retrieve(f"/v1/coupons/{coupon_id}")
        return self._coupons[coupon_id]

    def complete_discount(self, discount: Any) -> Any:
        """A discount object whose coupon (at `coupon` or `source.coupon`) is expanded."""
        if not isinstance(discount, Mapping):
            return discount  # a bare id: nothing to resolve it with
        out = dict(discount)
        if isinstance(out.get("coupon"), str):
            out["coupon"] = self.coupon(out["coupon"]) or out["coupon"]
        source = as_mapping(out.get("source"))
        if isinstance(source.get("coupon"), str):
            out["source"] = {**source, "coupon": self.coupon(source["coupon"]) or source["coupon"]}
        return out

    def complete_subscription(self, sub: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of `sub` that the MRR code can price without further lookups."""
        # Copies of the containers changed below; the rest is shared with `sub`.
        out = dict(sub)
        currency = out.get("currency") if isinstance(out.get("currency"), str) else None
        if isinstance(out.get("discount"), Mapping):  # the singular legacy field
            out["discount"] = self.complete_discount(out["discount"])
        if isinstance(out.get("discounts"), list):
            out["discounts"] = [self.complete_discount(d) for d in out["discounts"]]
        items = []
        for raw in list_data(out.get("items")):
            item = dict(raw) if isinstance(raw, Mapping) else raw
            if isinstance(item, dict):
                for key in ("price", "plan"):
                    if isinstance(item.get(key), Mapping):
                        item[key] = self.complete_price(item[key], currency)
                        if key == "price":
                            self.learn_price(item[key])
                if isinstance(item.get("discounts"), list):
                    item["discounts"] = [self.complete_discount(d) for d in item["discounts"]]
            items.append(item)
        if isinstance(out.get("items"), Mapping):
            out["items"] = {**out["items"], "data": items}
        elif isinstance(out.get("items"), list):
            out["items"] = items
        return out


def _needs_more(price: Mapping[str, Any], currency: str | None) -> bool:
    if price.get("billing_scheme") == "tiered" and not price.get("tiers"):
        return True
    price_currency = price.get("currency")
    return (
        currency is not None
        and isinstance(price_currency, str)
        and price_currency.lower() != currency.lower()
        and "currency_options" not in price
    )
