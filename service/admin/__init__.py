"""Operator endpoints under /v1/admin (their own keys), and the reconcile drift gauge."""

from __future__ import annotations

from fastapi import FastAPI

from service.admin.endpoints import router
from service.admin.metrics import DriftCollector


def install_admin(app: FastAPI) -> None:
    """Add the admin routes, and the drift gauge to the app's Prometheus registry."""
    app.include_router(router)
    app.state.telemetry.registry.register(DriftCollector(app.state.sessionmaker))


__all__ = ["install_admin", "router"]
