"""Bearer API keys, compared in constant time (design §7): read keys (API_KEYS) for /v1
reads, and admin keys (ADMIN_API_KEYS), apart from them, for the /v1/admin repairs that
write to the store."""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from service.kit.errors import ApiError
from service.settings import Settings

_bearer = HTTPBearer(auto_error=False, description="One of the configured API_KEYS.")
_admin_bearer = HTTPBearer(
    auto_error=False, scheme_name="AdminKey", description="One of the configured ADMIN_API_KEYS."
)


# async: a plain function would cost every request a threadpool hop.
async def get_settings_from_app(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]


def _check_key(
    credentials: HTTPAuthorizationCredentials | None, keys: Sequence[SecretStr], message: str
) -> str:
    """The bearer key if it is one of `keys`; 401 otherwise."""
    unauthorized = ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})
    if credentials is None:
        raise unauthorized
    given = credentials.credentials.encode()
    # Compare against every key without short-circuiting, so timing says nothing about
    # which key (or how much of one) matched.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given, key.get_secret_value().encode())
    if not matched:
        raise unauthorized
    return credentials.credentials


# async too: pure computation, and every /v1 read would otherwise pay a threadpool hop.
async def require_api_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    return _check_key(
        credentials,
        settings.api_keys,
        "missing or invalid API key: send `Authorization: Bearer <key>`",
    )


def require_admin_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> str:
    return _check_key(
        credentials,
        settings.admin_api_keys,
        "missing or invalid admin key: send `Authorization: Bearer <admin key>`",
    )


ApiKeyDep = Annotated[str, Depends(require_api_key)]
AdminKeyDep = Annotated[str, Depends(require_admin_key)]
