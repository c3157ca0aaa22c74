"""The reconcile job as POST /v1/admin/reconcile sees it.

The job itself lives in jobs/sync, which service/ must not import: the composition root
(service/app.py `create_app`) puts it on `app.state.reconciler`, and the route receives it
through `ReconcilerDep` (tests can replace it with `app.dependency_overrides`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Protocol

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.settings import Settings


class ReconcileUnavailableError(RuntimeError):
    """The job cannot run in this deployment (no STRIPE_API_KEY): the route answers 503."""


class ReconcileJob(Protocol):
    def __call__(
        self, session: Session, settings: Settings, *, account: str, repair: bool
    ) -> Mapping[str, Any]:
        """Compare `account`'s ledger with Stripe (and repair it with `repair`), record the
        run, flush only; the report as `ReconcileOut` JSON. Raises
        `ReconcileUnavailableError`, or `stripe.StripeError` when Stripe refuses or fails."""
        ...


# async: a plain function would cost every request a threadpool hop.
async def get_reconciler(request: Request) -> ReconcileJob:
    return request.app.state.reconciler


ReconcilerDep = Annotated[ReconcileJob, Depends(get_reconciler)]
