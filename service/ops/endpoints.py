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
from service.ops.gauges import read_lag

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Readiness: database reachable and migrated (backlog and lag reported, never "
    "a reason to refuse)",
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
            lag = read_lag(session)
    except SQLAlchemyError as exc:
        return JSONResponse(
            error_body("unavailable", f"database unreachable ({type(exc).__name__})"), 503
        )
    lag.publish(telemetry)
    # A backlog is reported, never a reason to refuse: during a burst the receiver is
    # exactly what must stay in the load balancer (design §10). Alert on the threshold.
    limit = request.app.state.settings.readyz_max_backlog
    return {
        "status": "ready",
        "revision": revision,
        "unhandled_events": lag.unhandled_events,
        "backlog_over_threshold": lag.unhandled_events > limit,
        "projection_lag_s": lag.projection_lag_s,
        "metrics_stale_s": lag.metrics_stale_s,
        "last_refresh_s": lag.last_refresh_s,
    }


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(telemetry: TelemetryDep) -> Response:
    return Response(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)
