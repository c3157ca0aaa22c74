"""Admin bearer keys (ADMIN_API_KEYS), apart from read keys: repairs write to the store."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.kit.auth import SettingsDep
from service.kit.errors import ApiError

_admin_bearer = HTTPBearer(
    auto_error=False, scheme_name="AdminKey", description="One of the configured ADMIN_API_KEYS."
)


def require_admin_key(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> None:
    unauthorized = ApiError(
        401,
        "unauthorized",
        "missing or invalid admin key: send `Authorization: Bearer <admin key>`",
        headers={"WWW-Authenticate": "Bearer"},
    )
    if credentials is None:
        raise unauthorized
    given = credentials.credentials.encode()
    # Every key, no short-circuit: timing says nothing about which (or how much) matched.
    matched = False
    for key in settings.admin_api_keys:
        matched |= hmac.compare_digest(given, key.get_secret_value().encode())
    if not matched:
        raise unauthorized


AdminDep = Depends(require_admin_key)
