"""One error shape for every answer: {"error": {"type", "message"}} (design §7)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("churn_ledger.errors")

# Errors that mean "the database is not there right now", not "your input is wrong":
# answer 503 so that Stripe (and load balancers) retry later.
UNAVAILABLE_ERRORS = (OperationalError, InterfaceError, PoolTimeoutError)


class ApiError(Exception):
    def __init__(
        self,
        status_code: int,
        type_: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.type = type_
        self.message = message
        self.headers = headers
        self.extra = extra


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    """The shape of every error answer."""

    error: ErrorDetail


def invalid_parameter(param: str, message: str) -> ApiError:
    """422 naming the parameter, as FastAPI's own validation errors are answered."""
    return ApiError(422, "invalid_request", f"invalid parameter {param!r}: {message}", param=param)


def error_body(type_: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"type": type_, "message": message, **extra}}


def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(
        error_body(exc.type, exc.message, **exc.extra), exc.status_code, headers=exc.headers
    )


def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed"}.get(
        exc.status_code, "http_error"
    )
    return JSONResponse(error_body(type_, str(exc.detail)), exc.status_code, headers=exc.headers)


def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    first = errors[0] if errors else {}
    param = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body", "path"))
    message = f"invalid parameter {param!r}: {first.get('msg', 'invalid')}"
    details = [
        {"param": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg")}
        for e in errors
    ]
    return JSONResponse(error_body("invalid_request", message, param=param, details=details), 422)


def _unavailable(_request: Request, exc: Exception) -> JSONResponse:
    log.warning("database unavailable: %s", type(exc).__name__)
    return JSONResponse(
        error_body("unavailable", "the database is unavailable; retry later"),
        503,
        headers={"Retry-After": "5"},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for exc_type in UNAVAILABLE_ERRORS:
        app.add_exception_handler(exc_type, _unavailable)
    # Anything else is answered 500 by service/kit/guard.py (without dropping the
    # connection, as Starlette's own last-resort handler would).
