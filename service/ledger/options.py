"""The settings the projector depends on, as a plain value (tests build it directly)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LedgerOptions:
    reporting_currency: str = "usd"
    past_due_grace_days: int | None = None
    max_attempts: int = 10
