"""The one `t=<unix>,v1=<hex>` signer: Stripe's scheme, byte for byte."""

from __future__ import annotations

import json

import pytest
import stripe

from service.kit.signing import sign, signature

BODY = b'{"id":"evt_1"}'
# openssl: printf '%s' '1700000000.{"id":"evt_1"}' | openssl dgst -sha256 -hmac whsec_test
KNOWN = "c89214b5b5da833daed6f0b8c5bb6bd58cea9022bd80ccc78230f3942d632925"


def test_known_vector():
    assert signature(BODY, "whsec_test", 1700000000) == KNOWN
    assert sign(BODY, "whsec_test", 1700000000) == f"t=1700000000,v1={KNOWN}"


def test_the_stripe_sdk_accepts_it():
    body = json.dumps({"id": "evt_1", "object": "event", "type": "invoice.paid"}).encode()
    header = sign(body, "whsec_test", 1700000000)
    # Far past timestamps: the SDK checks the tolerance against the clock.
    stripe.WebhookSignature.verify_header(body.decode(), header, "whsec_test", 10**10)
    event = stripe.Webhook.construct_event(body, header, "whsec_test", 10**10)
    assert (event.id, event.type) == ("evt_1", "invoice.paid")


@pytest.mark.parametrize(
    ("body", "secret", "timestamp"),
    [(BODY + b" ", "whsec_test", 1700000000), (BODY, "whsec_other", 1700000000),
     (BODY, "whsec_test", 1700000001)],
)  # fmt: skip
def test_the_sdk_refuses_any_other_body_secret_or_time(body: bytes, secret: str, timestamp: int):
    header = sign(body, secret, timestamp).replace(f"t={timestamp}", "t=1700000000")
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(BODY.decode(), header, "whsec_test", 10**10)
