"""Sign webhook bodies exactly as Stripe does, independently of the SDK under test.

Stripe: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

WEBHOOK_SECRET = "whsec_test_secret_for_churn_ledger"


def signature(body: bytes, secret: str, timestamp: int) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={signature(body, secret, t)}"


def event_body(event: dict[str, Any]) -> bytes:
    # Stripe pretty-prints webhook bodies; byte-identity tests rely on the exact bytes.
    return json.dumps(event, indent=2).encode()


def signed_headers(body: bytes, secret: str = WEBHOOK_SECRET, **kw: Any) -> dict[str, str]:
    return {"Stripe-Signature": sign(body, secret, **kw), "Content-Type": "application/json"}
