"""All SQL of the sync bookkeeping: backfill cursors and reconcile runs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from service.sync.models import ReconcileRun, SyncCursor


class SyncRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    # --- backfill cursors -------------------------------------------------------------

    def cursor(self, account: str, resource: str, query_key: str) -> SyncCursor:
        """The resource's cursor, fresh when absent or left by a different query."""
        found = self.session.get(SyncCursor, (account, resource))
        if found is None:
            found = SyncCursor(account=account, resource=resource)
            self.session.add(found)
        if found.query_key != query_key:
            found.query_key = query_key
            found.starting_after, found.completed = None, False
            found.pages = found.objects = 0
        found.updated_at = datetime.now(UTC)
        return found

    def clear_cursors(self, account: str) -> None:
        self.session.execute(delete(SyncCursor).where(SyncCursor.account == account))

    def cursors(self, account: str) -> Sequence[SyncCursor]:
        return self.session.scalars(
            select(SyncCursor).where(SyncCursor.account == account).order_by(SyncCursor.resource)
        ).all()

    # --- reconcile runs ---------------------------------------------------------------

    def add_run(self, run: ReconcileRun) -> ReconcileRun:
        self.session.add(run)
        self.session.flush()
        return run

    def latest_runs(self) -> Sequence[ReconcileRun]:
        """The newest run of every account (what the drift gauge shows)."""
        newest = (
            select(ReconcileRun.account, func.max(ReconcileRun.id).label("id"))
            .group_by(ReconcileRun.account)
            .subquery()
        )
        return self.session.scalars(
            select(ReconcileRun)
            .join(newest, ReconcileRun.id == newest.c.id)
            .order_by(ReconcileRun.account)
        ).all()
