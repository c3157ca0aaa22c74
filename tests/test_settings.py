from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


class TestSettings:
    def test_defaults(self, monkeypatch):
        for name in ("DATABASE_URL", "STRIPE_WEBHOOK_SECRETS", "API_KEYS"):
            monkeypatch.delenv(name, raising=False)
        s = Settings(_env_file=None)
        assert s.database_url.startswith("sqlite:///./data/")
        assert s.stripe_webhook_secrets == []
        assert s.api_keys == []
        assert (s.stripe_webhook_tolerance_s, s.max_body_bytes) == (300, 1024 * 1024)
        assert s.reporting_currency == "USD"

    def test_comma_separated_secrets_from_environment(self, monkeypatch):
        monkeypatch.setenv("STRIPE_WEBHOOK_SECRETS", "whsec_new, whsec_old,")
        monkeypatch.setenv("API_KEYS", "k1,k2")
        monkeypatch.setenv("REPORTING_CURRENCY", "eur")
        s = Settings(_env_file=None)
        assert [x.get_secret_value() for x in s.stripe_webhook_secrets] == [
            "whsec_new",
            "whsec_old",
        ]
        assert [x.get_secret_value() for x in s.api_keys] == ["k1", "k2"]
        assert s.reporting_currency == "EUR"
        assert "whsec_new" not in repr(s)

    def test_invalid_values_are_refused(self, monkeypatch):
        monkeypatch.setenv("STRIPE_WEBHOOK_TOLERANCE_S", "0")
        with pytest.raises(ValidationError):
            Settings(_env_file=None)
