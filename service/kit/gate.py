"""A first-come, first-served lock for the writers of one SQLite database in a process.

SQLite has a single write lock, and a writer that finds it taken sleeps in its busy
handler (up to 100 ms a try) while the thread that just released it takes it straight
back: under load, the projector's transactions starve the receiver's commits. Writers
that queue here first reach SQLite's lock in turn and never busy-wait on each other.
"""

from __future__ import annotations

import threading
from types import TracebackType


class WriteGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def __enter__(self) -> WriteGate:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while ticket != self._serving:
                self._cond.wait()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()
