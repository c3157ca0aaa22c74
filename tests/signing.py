"""Sign webhook bodies exactly as Stripe does, independently of the SDK under test.

Stripe: `Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>`, made by
`service.kit.signing` (tests/kit/test_signing.py checks it against a fixed vector and the
SDK's verifier).
"""

from __future__ import annotations

import json
import time
from typing import Any

from service.kit import signing

WEBHOOK_SECRET = "whsec_test_secret_for_churn_ledger"


def sign(body: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    return signing.sign(body, secret, int(time.time()) if timestamp is None else timestamp)


def event_body(event: dict[str, Any]) -> bytes:
    # Stripe pretty-prints webhook bodies; byte-identity tests rely on the exact bytes.
    return json.dumps(event, indent=2).encode()


def signed_headers(body: bytes, secret: str = WEBHOOK_SECRET, **kw: Any) -> dict[str, str]:
    return {"Stripe-Signature": sign(body, secret, **kw), "Content-Type": "application/json"}
