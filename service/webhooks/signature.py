"""Stripe-Signature verification over the raw body.

Uses the stripe SDK's `WebhookSignature.verify_header` (HMAC only) rather than
`construct_event`, which would also build a StripeObject tree we do not need.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import stripe

from service.kit.errors import ApiError


class WebhookRejected(ApiError):
    """A request refused before anything is stored; `reason` labels the metric."""

    def __init__(self, status_code: int, reason: str, message: str) -> None:
        type_ = "invalid_request" if status_code == 400 else reason
        super().__init__(status_code, type_, message, reason=reason)
        self.reason = reason


def verify_stripe_signature(
    payload: bytes, header: str | None, secrets: Sequence[str], tolerance_s: int
) -> None:
    if not secrets:
        raise WebhookRejected(
            400, "no_secret_configured", "no webhook secret is configured; refusing all events"
        )
    if not header:
        raise WebhookRejected(400, "missing_signature", "missing Stripe-Signature header")
    # Stripe's header is ASCII; the SDK's compare_digest raises TypeError on anything else.
    if not header.isascii():
        raise WebhookRejected(400, "malformed_signature", "Stripe-Signature header is malformed")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookRejected(400, "invalid_encoding", "body is not UTF-8") from None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance_s)
            _check_not_in_future(header, tolerance_s)
            return
        except stripe.SignatureVerificationError as exc:
            message = str(exc.user_message or exc)
            # The SDK checks the timestamp only after a signature matched: a stale
            # timestamp therefore means "right secret, replayed or delayed event".
            if message.startswith("Timestamp outside the tolerance zone"):
                raise WebhookRejected(
                    400, "stale_timestamp", f"timestamp outside the {tolerance_s}s tolerance"
                ) from None
            if message.startswith(("Unable to extract", "No signatures found with expected")):
                raise WebhookRejected(
                    400, "malformed_signature", "Stripe-Signature header is malformed"
                ) from None
    raise WebhookRejected(400, "invalid_signature", "no signature matches any configured secret")


def _check_not_in_future(header: str, tolerance_s: int) -> None:
    """The SDK refuses only old timestamps: one far ahead would keep a captured request
    replayable until then. Only reached once a signature matched, so the header is
    well-formed and its `t` an integer."""
    # Read as the SDK reads it: the first `t` item of the comma-separated list.
    items = [item.split("=", 2) for item in header.split(",")]
    timestamp = int(next(item[1] for item in items if item[0] == "t"))
    if timestamp > time.time() + tolerance_s:
        raise WebhookRejected(
            400, "future_timestamp", f"timestamp more than {tolerance_s}s in the future"
        )
