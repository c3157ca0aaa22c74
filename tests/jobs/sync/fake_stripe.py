"""A Stripe account behind respx routes, answering like the real API at the HTTP layer.

List endpoints return Stripe list objects (`object: "list"`, `data`, `has_more`, `url`),
newest first, paginated with `starting_after` and capped at `page_size` objects (small, so
that every test paginates). Faults are queued per path and page: a response (429, 500) or a
transport exception (network error) is served instead of the page, once or until cleared.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import respx

BASE = "https://api.stripe.com"
LISTS = ("customers", "subscriptions", "invoices", "events")


def error_response(status: int, message: str, **headers: str) -> httpx.Response:
    kind = "rate_limit_error" if status == 429 else "api_error"
    return httpx.Response(
        status, json={"error": {"type": kind, "message": message}}, headers=headers
    )


def not_found(what: str) -> httpx.Response:
    body = {"error": {"type": "invalid_request_error", "message": f"No such {what}"}}
    return httpx.Response(404, json=body)


@dataclass
class Fault:
    path: str
    starting_after: str | None  # None: any page of `path`
    outcomes: list[Any]  # httpx.Response or an exception instance, served in order
    forever: bool = False


@dataclass
class FakeStripe:
    page_size: int = 2
    customers: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    invoices: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    coupons: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoice_lines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)

    # --- faults and inspection --------------------------------------------------------

    def fail(
        self, path: str, *outcomes: Any, starting_after: str | None = None, forever: bool = False
    ) -> Fault:
        fault = Fault(path, starting_after, list(outcomes), forever)
        self.faults.append(fault)
        return fault

    def calls(self, path: str) -> list[dict[str, str]]:
        """Query parameters of every request to `path`, in order."""
        return [dict(r.url.params) for r in self.requests if r.url.path == path]

    # --- serving --------------------------------------------------------------------

    def install(self, router: respx.MockRouter) -> None:
        router.get(url__regex=rf"^{re.escape(BASE)}/v1/.*").mock(side_effect=self._serve)

    def _serve(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, params = request.url.path, dict(request.url.params)
        for fault in self.faults:
            page = params.get("starting_after")
            if fault.path == path and fault.starting_after in (None, page) and fault.outcomes:
                outcome = fault.outcomes[0] if fault.forever else fault.outcomes.pop(0)
                if isinstance(outcome, Exception):
                    raise outcome
                return outcome
        parts = path.strip("/").split("/")  # v1, resource, [id, [sub-resource]]
        if len(parts) == 2 and parts[1] == "events":
            # Listed with `Stripe-Account`, events need not say whose they are (Connect
            # webhooks do): the fake leaves it out, the harder case.
            listed = [{k: v for k, v in e.items() if k != "account"} for e in self.events]
            return self._list(path, listed, params)
        if len(parts) == 2 and parts[1] in LISTS:
            return self._list(path, getattr(self, parts[1]), params)
        if len(parts) == 3:
            found = {
                "prices": self.prices,
                "plans": self.prices,
                "coupons": self.coupons,
                "subscriptions": {s["id"]: s for s in self.subscriptions},
            }.get(parts[1], {}).get(parts[2])
            return httpx.Response(200, json=found) if found else not_found(parts[1])
        if len(parts) == 4 and parts[1] == "invoices" and parts[3] == "lines":
            return self._list(path, self.invoice_lines.get(parts[2], []), params, newest=False)
        return not_found(path)

    def _list(
        self, path: str, objects: list[dict[str, Any]], params: dict[str, str], newest: bool = True
    ) -> httpx.Response:
        selected = [o for o in objects if _matches(o, params)]
        if newest:
            selected.sort(key=lambda o: (o.get("created", 0), o["id"]), reverse=True)
        after = params.get("starting_after")
        if after is not None:
            ids = [o["id"] for o in selected]
            selected = selected[ids.index(after) + 1 :]
        limit = min(int(params.get("limit", 10)), self.page_size)
        body = {
            "object": "list",
            "data": selected[:limit],
            "has_more": len(selected) > limit,
            "url": path,
        }
        return httpx.Response(200, content=json.dumps(body).encode(), headers=_json_headers())


def _json_headers() -> dict[str, str]:
    return {"content-type": "application/json", "request-id": "req_fake"}


def _matches(obj: dict[str, Any], params: dict[str, str]) -> bool:
    status = params.get("status")
    if obj.get("object") == "subscription":
        # Stripe lists only subscriptions that are not canceled unless asked otherwise.
        if status is None and obj.get("status") == "canceled":
            return False
        if status not in (None, "all") and obj.get("status") != status:
            return False
    types = {v for k, v in params.items() if k.startswith("types[")}
    if types and obj.get("type") not in types:
        return False
    since = params.get("created[gte]")
    return since is None or obj.get("created", 0) >= int(since)


def requests_by_path(fake: FakeStripe) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for request in fake.requests:
        counts[request.url.path] += 1
    return dict(counts)
