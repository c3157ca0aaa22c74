"""The one place configuration comes from: environment variables (and an optional .env)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


@dataclass(frozen=True, slots=True)
class LedgerOptions:
    """The settings the projector depends on, as a plain value (tests build it directly)."""

    reporting_currency: str = "usd"
    past_due_grace_days: int | None = None
    max_attempts: int = 10


DEFAULT_DATABASE_URL = "sqlite:///./data/churn-ledger.db"


def _split_csv(value: object) -> object:
    # Operators write `A,B` in an env file; JSON lists are accepted too for tooling.
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            import json

            return json.loads(stripped)
        return [part.strip() for part in stripped.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    database_url: str = Field(
        DEFAULT_DATABASE_URL,
        description=(
            "SQLAlchemy URL: a SQLite file by default, postgresql+psycopg://... in production."
        ),
    )
    # Secrets have no defaults: with none configured the receiver refuses every event
    # (an empty HMAC key is forgeable) and reads refuse every key.
    stripe_webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated whsec_ secrets; several at once during rotation.",
    )
    stripe_webhook_tolerance_s: int = Field(300, ge=1)
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Comma-separated bearer keys for /v1 reads."
    )
    stripe_api_key: SecretStr | None = Field(None, description="For backfill/reconcile only.")
    stripe_api_base: str = Field(
        "https://api.stripe.com", description="Stripe API address (a local mock in benchmarks)."
    )
    stripe_max_network_retries: int = Field(
        3, ge=0, description="SDK retries of network errors, 409 and 5xx, per request."
    )
    admin_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Comma-separated bearer keys for /v1/admin."
    )
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    reporting_currency: str = Field("USD", min_length=3, max_length=3)
    log_level: str = "INFO"
    past_due_grace_days: int | None = Field(
        None, ge=0, description="Days a past_due subscription still counts; unset: until canceled"
    )
    projector_enabled: bool = Field(True, description="Run the projection worker inside `serve`")
    projector_mode: Literal["process", "thread"] = Field(
        "process",
        description=(
            "process: the worker runs in a child process of each `serve` process (it never"
            " takes the receiver's interpreter lock); thread: in a thread of it"
        ),
    )
    projector_max_attempts: int = Field(10, ge=1)
    readyz_max_backlog: int = Field(10_000, ge=1, description="/readyz fails past this backlog")
    # Failed-payment alerts (design §6): outbound webhooks signed like Stripe's.
    alert_webhook_url: str | None = Field(
        None, pattern=r"^https?://", description="POST alerts here; unset: no alerts are sent"
    )
    alert_webhook_secret: SecretStr | None = Field(
        None, description="HMAC-SHA256 key of the `Churn-Ledger-Signature` header"
    )
    mrr_at_risk_threshold: int | None = Field(
        None, ge=0, description="Alert when MRR at risk (reporting minor units) crosses this"
    )
    alert_max_age_hours: int = Field(
        72, ge=1, description="Alerts about older transitions (backfills) are not sent"
    )

    def ledger_options(self) -> LedgerOptions:
        return LedgerOptions(
            reporting_currency=self.reporting_currency.lower(),
            past_due_grace_days=self.past_due_grace_days,
            max_attempts=self.projector_max_attempts,
        )

    @field_validator("alert_webhook_url", "alert_webhook_secret", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _alerts_are_signed(self) -> Settings:
        # An unsigned alert is forgeable by anyone who can reach the receiver.
        if self.alert_webhook_url and not self.alert_webhook_secret:
            raise ValueError("ALERT_WEBHOOK_URL needs ALERT_WEBHOOK_SECRET")
        return self

    @field_validator("stripe_webhook_secrets", "api_keys", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("admin_api_keys", mode="before")
    @classmethod
    def _admin_csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("reporting_currency")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


@lru_cache
def get_settings() -> Settings:
    return Settings()
