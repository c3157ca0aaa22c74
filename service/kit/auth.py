"""Bearer API keys for /v1 reads, compared in constant time (design §7)."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.kit.errors import ApiError
from service.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="One of the configured API_KEYS.")


# async: a plain function would cost every request a threadpool hop.
async def get_settings_from_app(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]


# async too: pure computation, and every /v1 read would otherwise pay a threadpool hop.
async def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    unauthorized = ApiError(
        401,
        "unauthorized",
        "missing or invalid API key: send `Authorization: Bearer <key>`",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if credentials is None:
        raise unauthorized
    given = credentials.credentials.encode()
    # Compare against every key without short-circuiting, so timing says nothing about
    # which key (or how much of one) matched.
    matched = False
    for key in settings.api_keys:
        matched |= hmac.compare_digest(given, key.get_secret_value().encode())
    if not matched:
        raise unauthorized
    return credentials.credentials


ApiKeyDep = Annotated[str, Depends(require_api_key)]
