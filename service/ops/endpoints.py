"""/healthz, /readyz and /metrics: open, for orchestrators and Prometheus."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.db import current_revision, head_revision
from service.kit.deps import TelemetryDep
from service.kit.errors import error_body
from service.webhooks.repository import StripeEventRepository

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database reachable and migrated",
    responses={503: {"description": "Not ready; the error says why"}},
)
def readyz(request: Request, telemetry: TelemetryDep) -> Any:
    engine = request.app.state.engine
    head = head_revision()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        revision = current_revision(engine)
        if revision != head:
            return JSONResponse(
                error_body(
                    "not_migrated",
                    f"database at revision {revision}, expected {head}: run `churn-ledger migrate`",
                ),
                503,
            )
        with request.app.state.sessionmaker() as session:
            backlog = StripeEventRepository(session).count_unhandled()
    except SQLAlchemyError as exc:
        return JSONResponse(
            error_body("unavailable", f"database unreachable ({type(exc).__name__})"), 503
        )
    telemetry.unhandled_events.set(backlog)
    limit = request.app.state.settings.readyz_max_backlog
    if backlog > limit:
        return JSONResponse(
            error_body("backlog", f"{backlog} events not yet projected (limit {limit})"),
            503,
        )
    return {"status": "ready", "revision": revision, "unhandled_events": backlog}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(telemetry: TelemetryDep) -> Response:
    return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)
