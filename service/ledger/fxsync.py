"""`churn-ledger fx-sync` and its schedule (FX_SYNC_INTERVAL_S in `serve` and `worker`):
fetch the ECB's reference rates, store what is new, and commit (an edge, like the
metrics refresher's thread)."""

from __future__ import annotations

import contextlib
import logging
import threading
from datetime import UTC, date, datetime
from typing import Any

import httpx
from sqlalchemy.orm import Session, sessionmaker

from service.ledger import ecb
from service.ledger.service import FxSyncResult, ecb_feed_needed, store_ecb_rates
from service.settings import LedgerOptions, Settings

log = logging.getLogger("churn_ledger.fx")


def http_client() -> httpx.Client:
    # The whole history is several MB from a CDN: a generous read timeout.
    return httpx.Client(
        timeout=httpx.Timeout(60.0, connect=10.0),
        follow_redirects=True,
        headers={"User-Agent": "churn-ledger fx-sync"},
    )


def sync_once(
    factory: sessionmaker[Session],
    options: LedgerOptions,
    client: httpx.Client,
    *,
    gate: Any = None,
    today: date | None = None,
    since: date | None = None,
    base: str = ecb.ECB_BASE,
) -> FxSyncResult:
    """One sync in a transaction of its own. The download happens outside the write
    gate (SQLite's writers wait for none of it); the rates are stored under it.
    Raises EcbError or FxRateError, having stored nothing."""
    today = today or datetime.now(UTC).date()
    with factory() as session:
        feed = ecb_feed_needed(session, options, today=today, since=since)
        session.rollback()
    eur = ecb.parse(ecb.fetch(client, feed, base))
    with gate or contextlib.nullcontext(), factory() as session:
        result = store_ecb_rates(session, options, eur, feed=feed, today=today, since=since)
        session.commit()
    return result


class FxSyncer:
    """Runs `sync_once` every `interval_s` in a thread (the first at start). Each process
    that runs one syncs: with several, the later ones store nothing (the same feed)."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        options: LedgerOptions,
        interval_s: float,
        *,
        gate: Any = None,
        client: httpx.Client | None = None,
    ) -> None:
        self._factory = factory
        self._options = options
        self._interval_s = interval_s
        self._gate = gate
        self._client = client or http_client()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: FxSyncResult | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, factory: sessionmaker[Session], gate: Any = None
    ) -> FxSyncer | None:
        """None unless FX_SYNC_INTERVAL_S is set."""
        if not settings.fx_sync_interval_s:
            return None
        return cls(factory, settings.ledger_options(), settings.fx_sync_interval_s, gate=gate)

    def run_once(self) -> FxSyncResult:
        result = sync_once(self._factory, self._options, self._client, gate=self._gate)
        self.last = result
        if result.stored:
            log.info(
                "fx-sync stored %d ECB rates through %s; %d ledger rows recomputed",
                result.stored,
                result.latest,
                result.recomputed,
            )
        return result

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fx-sync", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._client.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except (ecb.EcbError, ValueError) as exc:
                # The ECB away or a bad feed: the rates held go on applying; next interval.
                log.warning("fx-sync failed: %s", exc)
            except Exception:
                log.exception("fx-sync failed")  # the database may be away
            self._stop.wait(self._interval_s)
