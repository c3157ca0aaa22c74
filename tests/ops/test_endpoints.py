from __future__ import annotations

from fastapi.testclient import TestClient


class TestOps:
    def test_healthz(self, client: TestClient):
        assert client.get("/healthz").json() == {"status": "ok"}

    def test_readyz_reports_revision_and_backlog(self, client: TestClient):
        from service.db import head_revision

        body = client.get("/readyz").json()
        assert body["status"] == "ready"
        assert body["revision"] == head_revision()
        assert body["unhandled_events"] == 0

    def test_metrics_is_prometheus_text(self, client: TestClient):
        response = client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert "# TYPE churn_ledger_http_request_duration_seconds histogram" in response.text

    def test_unknown_path_is_json_404(self, client: TestClient):
        response = client.get("/nope")
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found"

    def test_wrong_method_is_json_405(self, client: TestClient):
        response = client.get("/webhooks/stripe")
        assert response.status_code == 405
        assert response.json()["error"]["type"] == "method_not_allowed"


class TestLabelsAreBounded:
    def test_junk_methods_and_paths_share_labels(self, client: TestClient):
        before = len(client.get("/metrics").text)
        for i in range(200):
            client.request(f"JUNK{i}", f"/healthz/{i}")
            client.request(f"X{i}", "/healthz")
        text = client.get("/metrics").text
        assert "JUNK" not in text and "X1" not in text
        assert 'method="other"' in text
        assert "/healthz/1" not in text
        # 400 junk requests add a handful of series, not hundreds.
        assert len(text) - before < 20_000
