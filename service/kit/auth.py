"""Bearer API keys with scopes (design §7): read keys (API_KEYS) for /v1 reads, write keys
(WRITE_API_KEYS) also for PUT /v1/fx-rates, admin keys (ADMIN_API_KEYS) for everything,
/v1/admin included. A read key may be bound to Connect accounts; it then reads only
those (`?account=`). Keys are configured plain or as their SHA-256 (service/settings.py)
and compared as digests, in constant time over every configured key.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.kit.errors import ApiError
from service.settings import SCOPE_RANK, ApiKeySpec, KeyScope, Settings

_bearer = HTTPBearer(
    auto_error=False, description="A read key (API_KEYS), or a write or admin key."
)
_write_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="WriteKey",
    description="A write key (WRITE_API_KEYS) or an admin key.",
)
_admin_bearer = HTTPBearer(
    auto_error=False, scheme_name="AdminKey", description="One of the configured ADMIN_API_KEYS."
)


# async: a plain function would cost every request a threadpool hop.
async def get_settings_from_app(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_settings_from_app)]


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def match_key(settings: Settings, given: str | None) -> ApiKeySpec | None:
    """The configured key `given` is, or None.

    The digest of the given key is compared with every configured digest without
    short-circuiting, so timing says nothing about which key (or how much of one)
    matched, and plain and hashed entries cost the same."""
    if not given:
        return None
    digest = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
    found: ApiKeySpec | None = None
    for spec in settings.api_key_specs:
        # A key listed under several scopes has the widest of them.
        if hmac.compare_digest(digest, spec.digest) and (
            found is None or SCOPE_RANK[spec.scope] > SCOPE_RANK[found.scope]
        ):
            found = spec
    return found


def _check(
    request: Request,
    settings: Settings,
    credentials: HTTPAuthorizationCredentials | None,
    scope: KeyScope,
) -> ApiKeySpec:
    spec = match_key(settings, credentials.credentials if credentials else None)
    if spec is None:
        raise _unauthorized(
            f"missing or invalid API key: send `Authorization: Bearer <{scope} key>`"
        )
    if SCOPE_RANK[spec.scope] < SCOPE_RANK[scope]:
        raise ApiError(
            403, "forbidden", f"this route needs a {scope} key; this is a {spec.scope} key"
        )
    if spec.accounts is not None:
        # Every per-account route takes the account as `?account=` ("" the platform).
        account = request.query_params.get("account", "")
        if account not in spec.accounts:
            raise ApiError(403, "forbidden", "this key is not bound to that account")
    return spec


def _requirement(scope: KeyScope, bearer: HTTPBearer) -> Callable[..., Awaitable[ApiKeySpec]]:
    """The dependency that admits keys of `scope` or wider; `bearer` names the scheme the
    OpenAPI spec shows for it."""

    # async: pure computation, and every /v1 request would otherwise pay a threadpool hop.
    async def require(
        request: Request,
        settings: SettingsDep,
        credentials: HTTPAuthorizationCredentials | None,
    ) -> ApiKeySpec:
        return _check(request, settings, credentials, scope)

    # The module's postponed annotations would leave `bearer` a name FastAPI cannot resolve
    # (it is this closure's, not the module's): give the parameter its real type.
    require.__annotations__["credentials"] = Annotated[
        HTTPAuthorizationCredentials | None, Depends(bearer)
    ]
    require.__name__ = f"require_{scope}_key"
    return require


require_api_key = _requirement(KeyScope.read, _bearer)
require_write_key = _requirement(KeyScope.write, _write_bearer)
require_admin_key = _requirement(KeyScope.admin, _admin_bearer)

ApiKeyDep = Annotated[ApiKeySpec, Depends(require_api_key)]
WriteKeyDep = Annotated[ApiKeySpec, Depends(require_write_key)]
AdminKeyDep = Annotated[ApiKeySpec, Depends(require_admin_key)]
