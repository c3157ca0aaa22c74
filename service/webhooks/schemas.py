"""The part of a Stripe event envelope the store needs, and the receiver's answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

# Column limits of `stripe_events` (service/webhooks/models.py): checked here, before
# anything is stored, so that both engines refuse the same envelopes with the same 400
# (SQLite would store an over-long id that PostgreSQL refuses with an error).
ID_MAX = 255
OBJECT_TYPE_MAX = 64
API_VERSION_MAX = 64
# `created` is unix seconds; past 2100 it is no Stripe event (and 10**20 overflows BIGINT).
CREATED_MAX = 4_102_444_800


class EnvelopeError(ValueError):
    """A field of the envelope the store cannot keep as it is: refused with its reason."""


def printable(value: str) -> str:
    # isprintable() is False for NUL and every other control character, and for lone
    # surrogates: none of them can be stored in a PostgreSQL text column.
    if not value.isprintable():
        raise ValueError("must be printable text (no control characters)")
    return value


PrintableId = Annotated[str, Field(min_length=1, max_length=ID_MAX), AfterValidator(printable)]


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

    id: PrintableId
    object: str | None = None
    type: PrintableId
    created: int = Field(ge=0, lt=CREATED_MAX)
    api_version: Annotated[str, AfterValidator(printable)] | None = Field(
        None, max_length=API_VERSION_MAX
    )
    livemode: bool = False
    # Connect: present on events of connected accounts; absent or null on the platform's.
    # Empty is the platform itself, as null is.
    account: Annotated[str, Field(max_length=ID_MAX), AfterValidator(printable)] | None = None
    data: EventData

    @model_validator(mode="after")
    def _routing_fields_fit(self) -> StripeEventEnvelope:
        # data.object's routing fields are read leniently (a non-string is no id), but a
        # string that is stored must fit its column and be printable.
        for name, value, limit in (
            ("data.object.id", self.object_id, ID_MAX),
            ("data.object.object", self.object_type, OBJECT_TYPE_MAX),
            ("data.object.customer", self.customer_id, ID_MAX),
        ):
            if value is not None and (len(value) > limit or not value.isprintable()):
                raise EnvelopeError(f"{name}: must be printable text of at most {limit} characters")
        return self

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
        if first["type"] == "value_error" and not first["loc"]:
            # The model validator's EnvelopeError: its message names the field.
            message = str(first.get("ctx", {}).get("error", first["msg"]))
            raise EventParseError("not_an_event", f"not a Stripe event: {message}") from None
        if first["type"] == "json_invalid":
            raise EventParseError("malformed_json", "body is not valid JSON") from None
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise EventParseError(
            "not_an_event", f"not a Stripe event: {where}: {first['msg']}"
        ) from None


class WebhookAck(BaseModel):
    received: bool = Field(description="Always true: the event is durably stored.")
    duplicate: bool = Field(description="True when this event id was already stored.")


class DeadLetterOut(BaseModel):
    account: str = Field(description="Connect account; '' the platform")
    customer_id: str
    event_id: str
    type: str
    created: int = Field(description="Stripe's event.created, unix seconds")
    attempts: int = Field(description="Failed projections before it was set aside")
    reason: str | None = Field(description="The error its projection failed with (one line)")
    dead_at: datetime


class DeadLettersOut(BaseModel):
    total: int = Field(description="Dead letters of the account filter, all of them")
    data: list[DeadLetterOut] = Field(description="The newest first, up to `limit`")
