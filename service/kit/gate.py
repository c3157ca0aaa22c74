"""A first-come, first-served lock for the writers of one SQLite database.

SQLite has a single write lock, and a writer that finds it taken sleeps in its busy
handler (up to 100 ms a try) while the one that just released it takes it straight
back: under load, the projector's transactions starve the receiver's commits. Writers
that queue here first reach SQLite's lock in turn and never busy-wait on each other.

Threads of one process take tickets (strict FIFO). Across processes (the receiver and
the projector's own process, or two `serve`s on one file) the gate also holds an
exclusive `flock` on a file beside the database: a waiting process sleeps in the kernel
until the lock is free, instead of polling SQLite's lock.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path
from types import TracebackType

from sqlalchemy import Engine


class WriteGate:
    def __init__(self, lock_path: str | Path | None = None) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._lock_path = None if lock_path is None else str(lock_path)
        self._fd: int | None = None
        self._pid = 0
        self._held: int | None = None  # the descriptor locked by the current holder

    @classmethod
    def for_engine(cls, engine: Engine) -> WriteGate | None:
        """The gate of this engine's database: None for PostgreSQL (row locks suffice)."""
        if engine.dialect.name != "sqlite":
            return None
        database = engine.url.database
        if not database or database == ":memory:":
            return cls()
        return cls(f"{database}.write-lock")

    def _file(self) -> int | None:
        # One descriptor per process (opened again after a fork): flock excludes other
        # open file descriptions, and the tickets order this process's own threads.
        if self._fd is None or self._pid != os.getpid():
            assert self._lock_path is not None
            try:
                self._fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError:
                # Where the lock file cannot be, neither can the database: its own
                # connect fails next, as an unavailable database (503), not here.
                return None
            self._pid = os.getpid()
        return self._fd

    def __enter__(self) -> WriteGate:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            while ticket != self._serving:
                self._cond.wait()
        fd = None if self._lock_path is None else self._file()
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                self._next()
                raise
        self._held = fd
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._held is not None:
            fcntl.flock(self._held, fcntl.LOCK_UN)
        self._next()

    def _next(self) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()
