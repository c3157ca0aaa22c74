"""Key scopes, account binding, hashed keys, and the guard in front of every route
(auth before the body is read, a size limit everywhere, a 500 that keeps the connection)."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.settings import KeyScope, Settings
from tests.conftest import API_KEY, WRITE_KEY, make_settings

ADMIN = "test_admin_key_0123456789"
BOUND = "test_bound_key_0123456789"
HASHED = "test_hashed_key_0123456789"
RATES = {"rates": [{"currency": "eur", "day": "2025-01-01", "rate": "1.1"}]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def scoped(app: FastAPI, client: TestClient) -> TestClient:
    app.state.settings = make_settings(
        app.state.settings.database_url,
        api_keys=f"{API_KEY},{BOUND}@acct_1|platform,sha256:{hashlib.sha256(HASHED.encode()).hexdigest()}",
        write_api_keys=WRITE_KEY,
        admin_api_keys=ADMIN,
    )
    return client


class TestScopes:
    @pytest.mark.parametrize(
        ("key", "status"),
        [(API_KEY, 403), (BOUND, 403), (HASHED, 403), (WRITE_KEY, 200), (ADMIN, 200)],
    )
    def test_fx_rates_put_needs_write(self, scoped: TestClient, key: str, status: int):
        response = scoped.put("/v1/fx-rates", json=RATES, headers=bearer(key))
        assert response.status_code == status, response.text
        if status == 403:
            assert response.json()["error"]["type"] == "forbidden"

    @pytest.mark.parametrize("key", [API_KEY, HASHED, WRITE_KEY, ADMIN])
    def test_every_scope_reads(self, scoped: TestClient, key: str):
        assert scoped.get("/v1/fx-rates", headers=bearer(key)).status_code == 200
        assert scoped.get("/v1/failed-payments", headers=bearer(key)).status_code == 200

    @pytest.mark.parametrize("key", [API_KEY, WRITE_KEY])
    def test_admin_routes_need_admin(self, scoped: TestClient, key: str):
        response = scoped.post("/v1/admin/reconcile", json={}, headers=bearer(key))
        assert response.status_code == 403

    @pytest.mark.parametrize("key", ["", "wrong_key_0123456789", API_KEY + "x", API_KEY[:-1]])
    def test_unknown_key_is_401(self, scoped: TestClient, key: str):
        response = scoped.get("/v1/fx-rates", headers=bearer(key))
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"

    def test_hash_is_not_a_key(self, scoped: TestClient):
        digest = hashlib.sha256(HASHED.encode()).hexdigest()
        assert scoped.get("/v1/fx-rates", headers=bearer(digest)).status_code == 401
        assert scoped.get("/v1/fx-rates", headers=bearer(f"sha256:{digest}")).status_code == 401


class TestAccountBinding:
    @pytest.mark.parametrize(
        ("query", "status"),
        [("?account=acct_1", 200), ("", 200), ("?account=", 200), ("?account=acct_other", 403)],
    )
    def test_bound_key_reads_its_accounts_only(self, scoped: TestClient, query: str, status):
        for url in ("/v1/failed-payments", "/v1/metrics/mrr", "/v1/movements"):
            response = scoped.get(url + query, headers=bearer(BOUND))
            assert response.status_code == status, (url, response.text)

    def test_unbound_key_reads_any_account(self, scoped: TestClient):
        response = scoped.get("/v1/failed-payments?account=acct_other", headers=bearer(API_KEY))
        assert response.status_code == 200

    def test_bound_without_platform(self, app: FastAPI, client: TestClient):
        app.state.settings = make_settings(
            app.state.settings.database_url, api_keys=f"{BOUND}@acct_1"
        )
        assert client.get("/v1/failed-payments", headers=bearer(BOUND)).status_code == 403
        ok = client.get("/v1/failed-payments?account=acct_1", headers=bearer(BOUND))
        assert ok.status_code == 200


class TestKeyConfiguration:
    @pytest.mark.parametrize(
        "overrides",
        [
            {"api_keys": "sha256:abc"},
            {"api_keys": f"sha256:{'g' * 64}"},
            {"api_keys": f"{BOUND}@"},
            {"api_keys": f"{BOUND}@acct_1|nope"},
            {"write_api_keys": f"{WRITE_KEY}@acct_1"},
            {"admin_api_keys": f"{ADMIN}@acct_1"},
        ],
    )
    def test_bad_entries_refused_at_startup(self, overrides: dict[str, str]):
        with pytest.raises(ValidationError):
            make_settings("sqlite://", **overrides)

    def test_scopes_and_digests(self):
        s = make_settings("sqlite://", admin_api_keys=ADMIN)
        specs = {spec.scope: spec for spec in s.api_key_specs}
        assert specs[KeyScope.admin].digest == hashlib.sha256(ADMIN.encode()).digest()
        assert "0123456789" not in repr(s)

    def test_no_keys_refuse_everything(self, app: FastAPI, client: TestClient):
        app.state.settings = Settings(_env_file=None, database_url="sqlite://")  # type: ignore[call-arg]
        assert client.get("/v1/fx-rates", headers=bearer(API_KEY)).status_code == 401


def _asgi_call(app: FastAPI, method: str, path: str, headers: list[tuple[bytes, bytes]],
               chunks: list[bytes]) -> tuple[int, int]:  # fmt: skip
    """Drive the app as a server would: (status, body chunks the app asked for)."""
    asked = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        if asked > len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[asked - 1], "more_body": asked < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 1), "server": ("t", 80),
    }  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], asked


class TestGuard:
    def test_unauthenticated_body_is_never_read(self, app: FastAPI):
        chunks = [b'{"rates": [' + b" " * 65536] * 200  # 13 MB, were it read
        status, asked = _asgi_call(app, "PUT", "/v1/fx-rates", [], chunks)
        assert (status, asked) == (401, 0)

    def test_body_over_the_limit_is_413_on_every_route(self, client: TestClient):
        big = b"{" + b" " * 2_000_000 + b"}"
        for method, url in [("PUT", "/v1/fx-rates"), ("POST", "/v1/admin/reconcile")]:
            response = client.request(method, url, content=big, headers=bearer(WRITE_KEY))
            assert response.status_code == 413, url
            assert response.json()["error"]["type"] == "body_too_large"

    def test_chunked_body_is_cut_off_while_streaming(self, app: FastAPI):
        chunks = [b" " * 65536] * 200
        headers = [(b"authorization", f"Bearer {WRITE_KEY}".encode())]
        status, asked = _asgi_call(app, "PUT", "/v1/fx-rates", headers, chunks)
        assert status == 413
        assert asked <= 1024 * 1024 // 65536 + 1  # stopped at the limit, not at the end

    def test_unexpected_error_is_500_json_and_not_reraised(self, app: FastAPI):
        def boom() -> None:
            raise RuntimeError("boom")

        app.add_api_route("/test-boom", boom)
        # raise_server_exceptions: an exception that leaves the app (as Starlette's last
        # resort re-raises it, after which uvicorn drops the connection) fails the test.
        with TestClient(app, raise_server_exceptions=True) as strict:
            response = strict.get("/test-boom")
            assert response.status_code == 500
            assert response.json() == {
                "error": {"type": "internal_error", "message": "internal error"}
            }
