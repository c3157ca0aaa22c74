"""Dependency aliases for app-wide singletons kept on app.state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from service.kit.telemetry import Telemetry


# async: a plain function would cost every request a threadpool hop.
async def _telemetry(request: Request) -> Telemetry:
    return request.app.state.telemetry


TelemetryDep = Annotated[Telemetry, Depends(_telemetry)]
