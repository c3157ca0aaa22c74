"""Request guards of the routes that answer from the ledger's reporting amounts."""

from __future__ import annotations

from service.db import StreamSessionDep
from service.kit.auth import ApiKeyDep, SettingsDep
from service.ledger.service import check_reporting_currency


def require_current_reporting_currency(
    _key: ApiKeyDep, session: StreamSessionDep, settings: SettingsDep
) -> None:
    """After the key check (an unauthenticated caller learns nothing of the ledger): 503
    `reporting_currency_changed`, with the command to run, while the ledger's reporting
    amounts are in another currency than REPORTING_CURRENCY."""
    check_reporting_currency(session, settings.ledger_options())
