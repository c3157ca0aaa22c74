"""The part of a Stripe event envelope the store needs, and the receiver's answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class EventObject(BaseModel):
    """The routing fields of `data.object`. Everything else is skipped while parsing:
    the store keeps the raw body, and building the whole object would cost the hot path
    more than the rest of the request."""

    model_config = ConfigDict(extra="ignore")

    id: Any = None
    object: Any = None
    customer: Any = None


class EventData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    object: EventObject


class StripeEventEnvelope(BaseModel):
    """Just enough of https://docs.stripe.com/api/events/object to store and route an event."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1, max_length=255)
    object: str | None = None
    type: str = Field(min_length=1, max_length=255)
    created: int = Field(ge=0)
    api_version: str | None = Field(None, max_length=64)
    livemode: bool = False
    # Connect: present on events of connected accounts; absent or null on the platform's.
    account: str | None = Field(None, max_length=255)
    data: EventData

    @property
    def object_id(self) -> str | None:
        value = self.data.object.id
        return value if isinstance(value, str) else None

    @property
    def object_type(self) -> str | None:
        value = self.data.object.object
        return value if isinstance(value, str) else None

    @property
    def customer_id(self) -> str | None:
        obj = self.data.object
        if obj.object == "customer":
            return self.object_id
        customer = obj.customer
        # Webhooks carry ids; backfilled objects may carry the expanded customer.
        if isinstance(customer, dict):
            customer = customer.get("id")
        return customer if isinstance(customer, str) else None


class EventParseError(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def parse_event(payload: bytes | str) -> StripeEventEnvelope:
    try:
        return StripeEventEnvelope.model_validate_json(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise EventParseError("malformed_json", "body is not valid JSON") from None
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise EventParseError(
            "not_an_event", f"not a Stripe event: {where}: {first['msg']}"
        ) from None


class WebhookAck(BaseModel):
    received: bool = Field(description="Always true: the event is durably stored.")
    duplicate: bool = Field(description="True when this event id was already stored.")
