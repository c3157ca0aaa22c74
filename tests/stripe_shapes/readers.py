"""The payment readers, imported in one place.

They are moving from `service.payments.shapes` to `service.stripe_shapes.invoice` and
`service.stripe_shapes.charge`: when that lands, only these imports change.
"""

from service.payments.shapes import (
    read_charge_failure,
    read_invoice,
    read_payment_intent_failure,
)

__all__ = ["read_charge_failure", "read_invoice", "read_payment_intent_failure"]
