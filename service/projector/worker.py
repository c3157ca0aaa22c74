"""In-process projection worker: drains unhandled events off the request path (design §1).

A webhook's commit wakes it; it also polls, so events stored by another process (a second
receiver, a backfill) and scheduled changes (a discount ending) are picked up too.
"""

from __future__ import annotations

import contextlib
import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from service.kit.gate import WriteGate
from service.projector.service import project_pending
from service.settings import LedgerOptions

log = logging.getLogger("churn_ledger.worker")


class ProjectorWorker:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        options: LedgerOptions,
        *,
        poll_s: float = 1.0,
        batch: int = 200,
        gate: WriteGate | None = None,
    ) -> None:
        self._gate = gate or contextlib.nullcontext()
        self._factory = session_factory
        self._options = options
        self._poll_s = poll_s
        self._batch = batch
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="projector", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def drain_once(self) -> int:
        with self._gate, self._factory() as session:
            done = project_pending(session, self._options, limit=self._batch)
            session.commit()
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._poll_s)
            self._wake.clear()
            try:
                while not self._stop.is_set() and self.drain_once():
                    pass
            except Exception:
                # The database may be away; events stay unhandled and are retried.
                log.exception("projection pass failed")
