"""The Stripe API as the import jobs see it: GET with retries, and paginated lists.

The official SDK does the HTTP (its httpx client, auth, `Stripe-Account`, API version) and
retries network errors, 409 and 5xx `max_network_retries` times. It neither retries a 429
(unless Stripe says `Stripe-Should-Retry: true`) nor honours `Retry-After`, so every call
also goes through a bounded loop here that does, and that gives network errors a few more
chances after the SDK's own.

Requests go through `StripeClient.raw_request`: the same requestor as the typed services,
without building StripeObjects that would only be turned back into JSON for the store.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import stripe

from service.settings import Settings

PAGE_SIZE = 100  # Stripe's maximum
DEFAULT_MAX_ATTEMPTS = 8
DEFAULT_MAX_WAIT_S = 60.0


class StripeNotConfiguredError(RuntimeError):
    """No STRIPE_API_KEY: the import jobs have nothing to talk to."""


def make_stripe_client(settings: Settings, *, account: str | None = None) -> stripe.StripeClient:
    if settings.stripe_api_key is None:
        raise StripeNotConfiguredError("STRIPE_API_KEY is not set")
    return stripe.StripeClient(
        settings.stripe_api_key.get_secret_value(),
        # Connect: every request then acts on the connected account.
        stripe_account=account or None,
        base_addresses={"api": settings.stripe_api_base},
        max_network_retries=settings.stripe_max_network_retries,
        http_client=stripe.HTTPXClient(timeout=30, allow_sync_methods=True),
    )


@dataclass(frozen=True, slots=True)
class Page:
    objects: list[dict[str, Any]]
    has_more: bool

    @property
    def last_id(self) -> str | None:
        return self.objects[-1].get("id") if self.objects else None


def _retry_after(exc: stripe.StripeError) -> float | None:
    value = (exc.headers or {}).get("retry-after") or (exc.headers or {}).get("Retry-After")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from Stripe; fall back to our own backoff


class StripeApi:
    """Read-only access to one Stripe account, robust to rate limits and flaky networks."""

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.max_attempts = max_attempts
        self.max_wait_s = max_wait_s
        self.sleep = sleep
        self.requests = 0
        self.retries = 0

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET `path`; retries 429 (after `Retry-After`), network errors and 5xx."""
        attempt = 0
        while True:
            attempt += 1
            self.requests += 1
            try:
                return self.client.raw_request("get", path, **dict(params or {})).data
            except stripe.RateLimitError as exc:
                wait = _retry_after(exc)
                error: stripe.StripeError = exc
            except (stripe.APIConnectionError, stripe.APIError) as exc:
                # APIError is what 5xx (and unreadable bodies) raise once the SDK gave up.
                wait, error = None, exc
            if attempt >= self.max_attempts:
                raise error
            self.retries += 1
            backoff = min(2.0 ** (attempt - 1), self.max_wait_s)
            self.sleep(min(wait if wait is not None else backoff, self.max_wait_s))

    def retrieve(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """One object, or None if Stripe has no such object (404)."""
        try:
            return self.get(path, params)
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404:
                return None
            raise

    def pages(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        starting_after: str | None = None,
    ) -> Iterator[Page]:
        """Every page of a list endpoint, following `has_more` with `starting_after`.

        Page by page rather than the SDK's `auto_paging_iter`: the caller commits a cursor
        after each page, and a failed page is retried alone instead of restarting the list.
        """
        cursor = starting_after
        while True:
            query = {**(params or {}), "limit": PAGE_SIZE}
            if cursor is not None:
                query["starting_after"] = cursor
            body = self.get(path, query)
            page = Page(list(body.get("data") or []), bool(body.get("has_more")))
            yield page
            if not page.has_more or page.last_id is None:
                return
            cursor = page.last_id

    def all(self, path: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return [obj for page in self.pages(path, params) for obj in page.objects]
