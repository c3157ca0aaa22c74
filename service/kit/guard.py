"""The outer guard of every request (pure ASGI, before any route reads a body):

- a body larger than MAX_BODY_BYTES is answered 413 on every route, from Content-Length
  at once, or while a chunked body streams in (it is never buffered whole);
- a request under /v1 that carries a body (PUT, POST, ...) is answered 401 unless it
  bears a configured key, before its body is read: FastAPI reads and parses a body
  before it resolves the route's dependencies, so the scope check (service/kit/auth.py)
  alone came too late;
- an unexpected exception is answered 500 here and not re-raised: Starlette's outermost
  error middleware would re-raise it and the server would then drop the keep-alive
  connection, and with it the good requests pipelined behind the bad one.
"""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.kit.auth import match_key
from service.kit.errors import error_body
from service.settings import Settings

log = logging.getLogger("churn_ledger.errors")

# The receiver reads its body with the same limit itself and counts the rejection with
# its reason (service/webhooks/dependencies.py), from Content-Length or while streaming.
_SELF_LIMITED = frozenset({"/webhooks/stripe"})
_BODILESS = frozenset({"GET", "HEAD", "OPTIONS"})


def _json(
    status: int, body: dict[str, object], headers: tuple[tuple[bytes, bytes], ...] = ()
) -> tuple[Message, Message]:
    raw = json.dumps(body).encode()
    return (
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *headers,
            ],
        },
        {"type": "http.response.body", "body": raw},
    )


class RequestGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        settings: Settings = scope["app"].state.settings
        limit = settings.max_body_bytes
        path: str = scope["path"]
        headers = dict(scope["headers"])
        too_large = _json(
            413,
            error_body("body_too_large", f"body exceeds {limit} bytes", reason="body_too_large"),
        )
        self_limited = path in _SELF_LIMITED
        declared = headers.get(b"content-length", b"")
        if not self_limited and declared.isdigit() and int(declared) > limit:
            await _send_all(send, too_large)
            return
        if path.startswith("/v1/") and scope["method"] not in _BODILESS:
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            scheme, _, key = authorization.partition(" ")
            if scheme.lower() != "bearer" or match_key(settings, key.strip()) is None:
                await _send_all(
                    send,
                    _json(
                        401,
                        error_body(
                            "unauthorized",
                            "missing or invalid API key: send `Authorization: Bearer <key>`",
                        ),
                        ((b"www-authenticate", b"Bearer"),),
                    ),
                )
                return

        received = 0
        started = answered = False

        async def limited_receive() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request" and not self_limited:
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer now, and tell the app the client is gone: FastAPI turns any
                    # exception raised while it reads a body into a 400 of its own.
                    if not started and not answered:
                        answered = True
                        await _send_all(send, too_large)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if answered:
                return  # the 413 is out; whatever the app answers after it is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception as exc:
            if answered:
                return
            # The trace goes to the log, never to the client.
            log.exception("unhandled error", exc_info=exc)
            if not started:
                await _send_all(send, _json(500, error_body("internal_error", "internal error")))


async def _send_all(send: Send, messages: tuple[Message, ...]) -> None:
    for message in messages:
        await send(message)
