"""The one place configuration comes from: environment variables (and an optional .env)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property, lru_cache
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


class KeyScope(StrEnum):
    """What a bearer key may do; each scope includes the ones before it."""

    read = "read"  # /v1 reads: metrics, customers, movements, failed payments, fx rates
    write = "write"  # PUT /v1/fx-rates: rewrites reporting amounts across the ledger
    admin = "admin"  # /v1/admin: reconcile repairs, dead letters, jobs


SCOPE_RANK = {KeyScope.read: 0, KeyScope.write: 1, KeyScope.admin: 2}
PLATFORM = "platform"  # how a key binding names the platform's own events (account "")
_ACCOUNT = re.compile(r"^acct_[A-Za-z0-9]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class ApiKeySpec:
    """One configured key: `[sha256:]<key or hex digest>[@acct_1|acct_2|platform]`.

    Kept as the SHA-256 digest of the key either way, so that a plain and a hashed entry
    are checked alike (service/kit/auth.py)."""

    digest: bytes
    scope: KeyScope
    # None: every account; otherwise the accounts ("" the platform) this key may read.
    accounts: frozenset[str] | None

    @classmethod
    def parse(cls, entry: str, scope: KeyScope) -> ApiKeySpec:
        key, sep, bound = entry.partition("@")
        accounts: frozenset[str] | None = None
        if sep:
            names = [a.strip() for a in bound.split("|") if a.strip()]
            if not names or any(a != PLATFORM and not _ACCOUNT.match(a) for a in names):
                raise ValueError(
                    f"a {scope} key's binding must be acct_... or {PLATFORM!r}, joined by '|'"
                )
            accounts = frozenset("" if a == PLATFORM else a for a in names)
        if key.startswith("sha256:"):
            digest = key.removeprefix("sha256:").lower()
            if not _SHA256.match(digest):
                raise ValueError(f"a {scope} key 'sha256:...' needs 64 hex digits")
            return cls(bytes.fromhex(digest), scope, accounts)
        if not key:
            raise ValueError(f"a {scope} key is empty")
        return cls(hashlib.sha256(key.encode()).digest(), scope, accounts)


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
        default_factory=list,
        description=(
            "Comma-separated read keys for /v1: `key`, `sha256:<hex of the key's SHA-256>`,"
            " either with `@acct_1|acct_2|platform` to bind it to those accounts."
        ),
    )
    write_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Keys that may also write (PUT /v1/fx-rates); same forms, unbound only.",
    )
    stripe_api_key: SecretStr | None = Field(None, description="For backfill/reconcile only.")
    stripe_api_base: str = Field(
        "https://api.stripe.com", description="Stripe API address (a local mock in benchmarks)."
    )
    stripe_max_network_retries: int = Field(
        3, ge=0, description="SDK retries of network errors, 409 and 5xx, per request."
    )
    admin_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Keys that may do everything incl. /v1/admin; same forms, unbound only.",
    )
    max_body_bytes: int = Field(1024 * 1024, ge=1024)
    webhook_fast_path: bool = Field(
        True,
        description=(
            "Answer POST /webhooks/stripe in a plain ASGI handler before FastAPI's layers"
            " (same checks and answers; off: FastAPI's route)"
        ),
    )
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
    projector_yield_factor: float = Field(
        3.0,
        ge=0,
        description=(
            "Under load (webhooks faster than 500/s during a pass), rest this × a pass's"
            " duration after it: the receiver first, the backlog caught up after"
        ),
    )
    # Long enough for a burst of several seconds at full speed to pass whole (at 5 s, the
    # last 3 s of an 8 s burst were projected under load: serve 0.40x the bare endpoint
    # vs the receiver's 0.49x on PostgreSQL in the same run); short enough that a burst
    # adds at most a quarter of a minute to the ledger's lag, before its catch-up. A burst
    # is worth answering fast: Stripe retries what it is not answered in time.
    projector_defer_s: float = Field(
        15.0,
        ge=0,
        description=(
            "serve's projector process: after a pass under load, go on resting while"
            " webhooks keep arriving faster than 500/s, up to this many seconds; then"
            " catch up. 0: rest by PROJECTOR_YIELD_FACTOR only"
        ),
    )
    # Live metrics (design §10): whatever process projects refreshes the metric tables.
    metrics_live_refresh: bool = Field(
        True, description="Refresh the metric tables right after projector passes"
    )
    metrics_refresh_debounce_s: float = Field(
        0.2, ge=0, description="Refresh once projections pause this long"
    )
    metrics_refresh_max_delay_s: float = Field(
        1.0, ge=0, description="…but at most this long after the first change"
    )
    metrics_refresh_rest_factor: float | None = Field(
        None,
        ge=0,
        description=(
            "After a refresh of d seconds, wait at least this × d before the next"
            " (unset: 3 on SQLite, whose write lock a refresh holds; 0 on PostgreSQL)"
        ),
    )
    readyz_max_backlog: int = Field(
        10_000,
        ge=1,
        description="/readyz says `backlog_over_threshold` past this backlog (it stays ready)",
    )
    gauges_interval_s: float = Field(
        5.0, gt=0, description="Seconds between updates of the backlog and lag gauges"
    )
    fx_sync_interval_s: float | None = Field(
        None,
        ge=60,  # the ECB publishes once a working day; a tighter loop only costs it
        description=(
            "`serve` and `worker` run `fx-sync` (ECB reference rates) at start and then"
            " every this many seconds; unset: never (run `churn-ledger fx-sync` from cron)"
        ),
    )
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
    alert_settle_s: int = Field(
        120,
        ge=0,
        description=(
            "An alert waits this long before it is sent, and is then sent only if the"
            " episode still shows it: out-of-order deliveries within it never send a false alert"
        ),
    )

    def ledger_options(self) -> LedgerOptions:
        return LedgerOptions(
            reporting_currency=self.reporting_currency.lower(),
            past_due_grace_days=self.past_due_grace_days,
            max_attempts=self.projector_max_attempts,
        )

    @field_validator(
        "alert_webhook_url", "alert_webhook_secret", "fx_sync_interval_s", mode="before"
    )
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

    @field_validator("admin_api_keys", "write_api_keys", mode="before")
    @classmethod
    def _admin_csv(cls, value: object) -> object:
        return _split_csv(value)

    @cached_property
    def api_key_specs(self) -> tuple[ApiKeySpec, ...]:
        """Every configured key with its scope (checked at construction, parsed once)."""
        return tuple(
            ApiKeySpec.parse(key.get_secret_value(), scope)
            for scope, keys in (
                (KeyScope.read, self.api_keys),
                (KeyScope.write, self.write_api_keys),
                (KeyScope.admin, self.admin_api_keys),
            )
            for key in keys
        )

    @model_validator(mode="after")
    def _keys_parse(self) -> Settings:
        for spec in self.api_key_specs:
            if spec.scope != KeyScope.read and spec.accounts is not None:
                # Fx rates and repairs act on the whole store: an account-bound key
                # writing them would reach beyond its accounts.
                raise ValueError(f"{spec.scope} keys cannot be bound to accounts")
        return self

    @field_validator("reporting_currency")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


@lru_cache
def get_settings() -> Settings:
    return Settings()
