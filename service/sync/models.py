"""Bookkeeping of the backfill and reconcile jobs (never a source of ledger numbers)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from service.db import Base, BigIntPK


class SyncCursor(Base):
    """Where an interrupted backfill resumes, per Stripe account and listed resource.

    Written in the same transaction as the page it follows, so a crash between pages
    neither loses a page nor stores it twice. A finished backfill deletes its cursors:
    the next run is a full (idempotent) pass again.
    """

    __tablename__ = "sync_cursors"

    account: Mapped[str] = mapped_column(String(255), primary_key=True)
    resource: Mapped[str] = mapped_column(String(32), primary_key=True)
    # The list parameters the cursor belongs to (e.g. --since): a cursor of another
    # query would skip the wrong objects, so a mismatch restarts the resource.
    query_key: Mapped[str] = mapped_column(String(255))
    starting_after: Mapped[str | None] = mapped_column(String(255))
    completed: Mapped[bool] = mapped_column(Boolean, default=False)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    objects: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ReconcileRun(Base):
    """One reconcile pass: what the drift gauge reports, and its audit trail."""

    __tablename__ = "reconcile_runs"
    __table_args__ = (Index("ix_reconcile_runs_account", "account", "id"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    account: Mapped[str] = mapped_column(String(255))
    trigger: Mapped[str] = mapped_column(String(16), doc="cli | api")
    as_of: Mapped[int] = mapped_column(BigInteger, doc="unix time the comparison was made at")
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    checked: Mapped[int] = mapped_column(Integer)
    drifted: Mapped[int] = mapped_column(Integer)
    repaired: Mapped[int] = mapped_column(Integer)
    # {currency: sum of |stripe − ledger|} in minor units: JSON, one row per run.
    drift_mrr: Mapped[dict[str, int]] = mapped_column(JSON)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)
