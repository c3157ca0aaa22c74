"""Stripe's webhook signature scheme, for what we send and what the tests send.

`t=<unix>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>`: the `Stripe-Signature` header
Stripe puts on webhooks, and the `Churn-Ledger-Signature` header on our alerts (so that
receivers can verify alerts with any Stripe SDK). Incoming Stripe webhooks are verified by
the official SDK (`service.webhooks.signature`), not here.
"""

from __future__ import annotations

import hashlib
import hmac


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """The hex `v1` value: HMAC-SHA256 over the timestamp, a dot and the exact body bytes."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The whole header value, `t=<timestamp>,v1=<signature>`."""
    return f"t={timestamp},v1={signature(body, secret, timestamp)}"
