"""POST /webhooks/stripe as a plain ASGI handler, called by the app before any of its
layers (service/app.py: ChurnLedgerApp.__call__).

Profiled under load (16 connections, SQLite), a webhook spent about a third of the
server's CPU in FastAPI's layers (its middleware stack, routing, dependency solving)
before and after our own work; as the outermost middleware, still ~5% in the layers
FastAPI and Starlette put outside every middleware (error, telemetry and body-limit
wrappers). This handler answers the route before any of them, with
the same checks and answers as the FastAPI route it shadows (service/webhooks/endpoints.py,
kept: the OpenAPI spec documents it), built from the same functions: size limit, then
`verify_event` (signature, envelope; rejections counted and logged), then
`accept_webhook` (stored and committed before the 2xx). It does what the outer layers do
for every route: the request latency histogram (TimingMiddleware), the JSON error shape,
503 with Retry-After when the database is away, 500 without dropping the connection.

Tests swap the event writer with `app.dependency_overrides[get_event_writer]`: the handler
honours that override, so tests exercise this path and not only the shadowed route.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.types import Receive, Scope, Send

from service.kit.errors import UNAVAILABLE_ERRORS, ApiError, error_body
from service.settings import Settings
from service.webhooks.dependencies import (
    count_rejection,
    get_event_writer,
    too_large,
    verify_event,
)
from service.webhooks.service import accept_webhook
from service.webhooks.signature import WebhookRejected

log = logging.getLogger("churn_ledger.webhooks")
errors_log = logging.getLogger("churn_ledger.errors")

PATH = "/webhooks/stripe"
_JSON = (b"content-type", b"application/json")


def handles(scope: Scope) -> bool:
    return scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST"


class WebhookFastPath:
    def __init__(self, app: Any) -> None:
        self.app = app  # the FastAPI app: its state, settings and dependency overrides

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        app = self.app
        state = app.state
        status = 500
        try:
            status, body, headers = await self._handle(app, state, scope, receive, started)
        except Exception as exc:  # the guard's rule: a 500, the connection kept
            errors_log.exception("unhandled error", exc_info=exc)
            body = json.dumps(error_body("internal_error", "internal error")).encode()
            headers = ()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [_JSON, (b"content-length", str(len(body)).encode()), *headers],
            }
        )
        await send({"type": "http.response.body", "body": body})
        telemetry = state.telemetry
        telemetry.labelled(telemetry.request_latency, "POST", PATH, str(status)).observe(
            time.perf_counter() - started
        )

    async def _handle(
        self, app: Any, state: Any, scope: Scope, receive: Receive, started: float
    ) -> tuple[int, bytes, tuple[tuple[bytes, bytes], ...]]:
        settings: Settings = state.settings
        telemetry = state.telemetry
        signature = None
        declared = None
        for name, value in scope["headers"]:
            if name == b"stripe-signature":
                signature = value.decode("latin-1")
            elif name == b"content-length":
                declared = value
        try:
            payload = await _read_limited(receive, declared, settings.max_body_bytes)
            if payload is None:
                return 400, _error("invalid_request", "the client went away"), ()
        except WebhookRejected as exc:
            count_rejection(exc, telemetry, started)
            return exc.status_code, _api_error(exc), ()
        try:
            event = verify_event(payload, signature, settings, telemetry, started)
        except WebhookRejected as exc:
            return exc.status_code, _api_error(exc), ()
        override = app.dependency_overrides.get(get_event_writer)
        writer = override() if override is not None else state.event_writer
        try:
            body = await accept_webhook(writer, event, telemetry, state.event_stored_hooks)
        except UNAVAILABLE_ERRORS as exc:
            log.warning("database unavailable: %s", type(exc).__name__)
            message = "the database is unavailable; retry later"
            return 503, _error("unavailable", message), ((b"retry-after", b"5"),)
        return 200, body, ()


async def _read_limited(receive: Receive, declared: bytes | None, limit: int) -> bytes | None:
    """The body, cut off past `limit` (from Content-Length at once, or while a chunked body
    streams in); None if the client disconnected first."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _error(type_: str, message: str, **extra: Any) -> bytes:
    return json.dumps(error_body(type_, message, **extra)).encode()


def _api_error(exc: ApiError) -> bytes:
    return _error(exc.type, exc.message, **exc.extra)
