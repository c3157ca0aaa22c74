"""FastAPI factory: routers, middleware, error handlers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.types import Receive, Scope, Send

from jobs.sync.reconcile import reconcile_request
from service.dashboard.endpoints import install as install_dashboard
from service.db import (
    DatabaseNotMigratedError,
    create_db_engine,
    ensure_migrated,
    make_sessionmaker,
)
from service.kit.errors import install_error_handlers
from service.kit.gate import WriteGate
from service.kit.guard import RequestGuard
from service.kit.telemetry import Telemetry, TimingMiddleware
from service.ledger.endpoints import router as ledger_router
from service.ledger.fxsync import FxSyncer
from service.metrics.endpoints import router as metrics_router
from service.metrics.refresh import MetricsRefresher
from service.ops.endpoints import router as ops_router
from service.ops.gauges import GaugeUpdater
from service.payments.endpoints import router as payments_router
from service.payments.sender import AlertSender, OutboxJanitor
from service.projector.worker import (
    QUIET_BATCH,
    ProjectorProcess,
    ProjectorWorker,
    batch_for,
)
from service.settings import Settings, get_settings
from service.sync.collector import DriftCollector
from service.sync.endpoints import router as sync_router
from service.webhooks import fastpath
from service.webhooks.collector import DeadLetterCollector
from service.webhooks.endpoints import admin_router as dead_letters_router
from service.webhooks.endpoints import router as webhooks_router
from service.webhooks.fastpath import WebhookFastPath
from service.webhooks.writer import writer_for

log = logging.getLogger("churn_ledger.app")

API_DESCRIPTION = """\
Revenue-churn service for Stripe. Stripe webhooks go to `POST /webhooks/stripe`
(verified with `Stripe-Signature`); reads under `/v1` need `Authorization: Bearer <API key>`.
Amounts are integers in minor units with their currency; rates are decimals, `null` when
undefined. Errors are `{"error": {"type", "message"}}`.
"""


class ChurnLedgerApp(FastAPI):
    """The service's ASGI app: FastAPI, with POST /webhooks/stripe answered first by
    its fast path where enabled (service/webhooks/fastpath.py)."""

    webhook_fast_path: WebhookFastPath | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.webhook_fast_path
        if fast is not None and fastpath.handles(scope):
            scope["app"] = self
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, engine: Engine | None = None) -> FastAPI:
    settings = settings or get_settings()
    engine = engine or create_db_engine(settings.database_url)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            ensure_migrated(engine)
        except DatabaseNotMigratedError:
            raise
        except SQLAlchemyError as exc:
            # Unreachable is not fatal: /readyz fails and webhooks answer 503, so
            # Stripe retries until the database is back.
            log.warning("database unreachable at startup: %s", type(exc).__name__)
        worker: ProjectorWorker | ProjectorProcess | None = None
        refresher = None  # in process mode the projector's process refreshes the metrics
        if settings.projector_enabled and settings.projector_mode == "process":
            worker = ProjectorProcess(settings)
        elif settings.projector_enabled:
            refresher = MetricsRefresher.from_settings(
                settings, app.state.sessionmaker, app.state.write_gate
            )
            worker = ProjectorWorker(
                app.state.sessionmaker,
                settings.ledger_options(),
                batch=batch_for(engine.dialect.name),
                gate=app.state.write_gate,
                after_pass=None if refresher is None else refresher.poke,
                yield_factor=settings.projector_yield_factor,
                quiet_batch=QUIET_BATCH,
            )
        if refresher is not None:
            refresher.start()
        app.state.metrics_refresher = refresher
        gauges = GaugeUpdater(app.state.sessionmaker, telemetry, settings.gauges_interval_s)
        gauges.start()
        if worker is not None:
            app.state.event_stored_hooks.append(worker.wake)
            worker.start()
            worker.wake()  # drain whatever a previous run left queued
        app.state.projector = worker
        # None when ALERT_WEBHOOK_URL is unset: a janitor then keeps the outbox bounded.
        alerts = AlertSender.from_settings(app.state.sessionmaker, settings)
        janitor = None
        if alerts is not None:
            alerts.start()
        else:
            janitor = OutboxJanitor.from_settings(app.state.sessionmaker, settings)
            janitor.start()
        app.state.alert_sender = alerts
        fx_syncer = FxSyncer.from_settings(settings, app.state.sessionmaker, app.state.write_gate)
        if fx_syncer is not None:
            fx_syncer.start()
        app.state.fx_syncer = fx_syncer
        try:
            yield
        finally:
            if fx_syncer is not None:
                fx_syncer.stop()
            if alerts is not None:
                alerts.stop()
            if janitor is not None:
                janitor.stop()
            await app.state.event_writer.aclose()  # what was acknowledged is committed already
            if worker is not None:
                app.state.event_stored_hooks.remove(worker.wake)
                worker.stop()
            if refresher is not None:
                refresher.stop()
            gauges.stop()

    app = ChurnLedgerApp(
        title="churn-ledger",
        version="0.1.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
    )
    telemetry = Telemetry()
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.telemetry = telemetry
    # Writers of one SQLite database take turns, across processes too (service/kit/gate.py).
    app.state.write_gate = WriteGate.for_engine(engine)
    app.state.event_writer = writer_for(engine, app.state.write_gate)
    # Called after a webhook's event is committed (the projector wakes up on it).
    app.state.event_stored_hooks = []
    app.state.projector = None
    app.state.metrics_refresher = None
    app.state.fx_syncer = None
    # The job POST /v1/admin/reconcile runs (service/sync/reconciler.py).
    app.state.reconciler = reconcile_request

    install_error_handlers(app)
    # Inside the timing middleware, so that its 401, 413 and 500 answers are timed too.
    app.add_middleware(RequestGuard)
    app.add_middleware(TimingMiddleware, telemetry=telemetry)
    if settings.webhook_fast_path:
        # The hottest route, answered before any of FastAPI's layers (timed by itself).
        app.webhook_fast_path = WebhookFastPath(app)
    app.include_router(webhooks_router)
    app.include_router(ops_router)
    app.include_router(metrics_router)
    app.include_router(ledger_router)
    app.include_router(sync_router)  # /v1/admin
    app.include_router(dead_letters_router)  # /v1/admin/dead-letters
    telemetry.registry.register(DeadLetterCollector(app.state.sessionmaker))
    telemetry.registry.register(DriftCollector(app.state.sessionmaker))  # reconcile drift
    app.include_router(payments_router)
    install_dashboard(app)  # /dashboard and / (static files reading /v1 in the browser)
    return app
