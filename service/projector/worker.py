"""The projection worker: drains the projection queue off the request path (design §1).

A webhook's commit wakes it; it also polls, so events stored by another process (a second
receiver, a backfill) and scheduled changes (a discount ending) are picked up too.

`ProjectorWorker` runs the loop in a thread of the process that creates it (`churn-ledger
worker`, tests). `ProjectorProcess` is how `serve` runs it by default: in a process of its
own, so that projecting never takes the receiver's interpreter lock, at a lower CPU
priority, so that under load the receiver is served first and the projector catches up
after; the serving process restarts it if it dies.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable
from multiprocessing.reduction import DupFd
from typing import Any, Protocol

from sqlalchemy.orm import Session, sessionmaker

from service.db import create_db_engine, make_sessionmaker
from service.kit.gate import WriteGate
from service.kit.telemetry import configure_logging
from service.metrics.refresh import MetricsRefresher
from service.projector.service import keep_statistics, plan_pending, project_pending
from service.settings import LedgerOptions, Settings

log = logging.getLogger("churn_ledger.worker")

# SQLite has one write lock, held for a whole batch: a few customers per transaction
# keep the receiver's wait for it short. PostgreSQL locks customers, not the database.
SQLITE_BATCH = 16
POSTGRES_BATCH = 200
# ... but only while webhooks arrive: a pass during which none did is followed by one of
# QUIET_BATCH customers. Catching up after a burst in passes of 16 spent most of its
# time on each pass's fixed cost (a 20,000-event backlog of 5,000 customers on SQLite:
# 2,800 events/s in passes of 16, 7,000 in passes of 200).
QUIET_BATCH = 200
NICE = 10  # below the receiver: the kernel gives it the CPU first under load
# Under load (webhooks arriving faster than YIELD_ABOVE_PER_S during a pass), a pass of d
# seconds is followed by PROJECTOR_YIELD_FACTOR × d of rest. On SQLite a pass holds the
# one write lock the receiver's commits need, and at a lower CPU priority it holds it
# longer under load; on PostgreSQL its queries make the database's own processes compete
# with the receiver for the CPU. Resting also lets a customer's events of a burst gather
# and be projected in one pass instead of one each: a burst is caught up sooner, not
# later. A steady trickle (200 events/s) is projected at once.
YIELD_ABOVE_PER_S = 500
MAX_REST_S = 1.0
# Where arrivals are counted (serve's pipe), a burst is let pass whole: after a pass under
# load the projector goes on resting, a tick at a time, while webhooks keep arriving
# faster than YIELD_ABOVE_PER_S, up to PROJECTOR_DEFER_S from the first rest; then it
# catches up (resting by the factor only) until the queue is empty, and the next burst
# is let pass again. A burst costs the receiver nothing for its first seconds, and the
# backlog of a burst is projected in fewer, larger passes after it.
DEFER_TICK_S = 0.2
# The first tick of a rest is shorter: a pass of a few ms under a steady trickle can see
# arrivals bunched to a burst's rate (4 webhooks in 7 ms), and a 0.2 s tick then held
# those webhooks' projection up (the lag's p99 at 200 events/s was such ticks).
FIRST_TICK_S = 0.05
# ... and a pass shorter than this is judged over this long: a few arrivals bunched into
# a 7 ms pass are no burst (10 in 20 ms are 500/s).
LOAD_WINDOW_S = 0.02
# PostgreSQL: how often, at most, a projector checks for tables whose planner statistics
# fell behind (keep_statistics); a check is one read of the schema's pg_class rows.
STATISTICS_EVERY_S = 2.0


class _Flag(Protocol):
    def set(self) -> None: ...
    def clear(self) -> int | None: ...  # the wake-ups cleared, where counted
    def is_set(self) -> bool: ...
    def wait(self, timeout: float | None = None) -> bool: ...


def batch_for(dialect: str) -> int:
    return SQLITE_BATCH if dialect == "sqlite" else POSTGRES_BATCH


class ProjectorWorker:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        options: LedgerOptions,
        *,
        poll_s: float = 1.0,
        batch: int = 200,
        gate: WriteGate | None = None,
        wake: _Flag | None = None,
        after_pass: Callable[[bool], None] | None = None,
        yield_factor: float = 0.0,
        defer_s: float = 0.0,
        quiet_batch: int | None = None,
    ) -> None:
        self._gate = gate or contextlib.nullcontext()
        # A write gate means SQLite's one write lock: each pass is computed before it is
        # taken (plan_pending), and only written under it, while webhooks may be waiting
        # for it. Where arrivals are seen (serve), only after a pass under load: after a
        # quiet one, or at a trickle, a pass computes under the lock, held a few ms, since
        # reading once costs less CPU (a niced projector on a busy machine lags by it).
        self._plan_first = gate is not None
        self._contended = True
        self._yield_factor = yield_factor
        self._defer_s = defer_s
        self._deferred_since: float | None = None  # when the current burst's rest began
        self._statistics_at = float("-inf")
        self._analyzing = threading.Lock()
        # Called after each committed pass that projected something (the metrics
        # refresher's poke), with `busy`.
        self._after_pass = after_pass
        self._factory = session_factory
        self._options = options
        self._poll_s = poll_s
        self._batch = batch
        # Where this process's receiver wakes it (serve), passes after which no webhook
        # arrived take `quiet_batch` customers; elsewhere arrivals cannot be seen.
        self._quiet_batch = max(batch, quiet_batch or batch)
        self._sees_arrivals = quiet_batch is not None
        self._limit = batch
        self._wake: _Flag = wake or threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="projector", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        self._wake.set()

    def drain_once(self) -> int:
        started = time.perf_counter()
        plan = None
        if self._plan_first and self._contended:
            with self._factory() as session:
                plan = plan_pending(session, self._options, limit=self._limit)
            if not plan.customers:
                return 0
        locked = time.perf_counter()
        with self._gate, self._factory() as session:
            done = project_pending(session, self._options, limit=self._limit, plan=plan)
            session.commit()
        if done:
            ended = time.perf_counter()
            log.debug(
                "projected %d in %.0f ms (%.0f ms holding the gate)",
                done, (ended - started) * 1000, (ended - locked) * 1000,
            )  # fmt: skip
            if self._after_pass is not None:
                self._after_pass(self.busy)
            self._keep_statistics()
        return done

    @property
    def busy(self) -> bool:
        """Where arrivals are counted: from the first rest under load until the queue is
        empty again (the passes are those catching up with a burst, during it or after)."""
        return self._deferred_since is not None

    def _keep_statistics(self) -> None:
        now = time.monotonic()
        if now - self._statistics_at < STATISTICS_EVERY_S or self._analyzing.locked():
            return
        self._statistics_at = now
        # In a thread of its own: an ANALYZE takes from milliseconds to a second, and the
        # passes need not wait for it (at 200 events/s on PostgreSQL, the lag's worst
        # samples came every STATISTICS_EVERY_S).
        threading.Thread(target=self._analyze, name="projector-statistics", daemon=True).start()

    def _analyze(self) -> None:
        with self._analyzing:
            try:
                with self._factory() as session:
                    analyzed = keep_statistics(session)
                    session.commit()
            except Exception:  # nothing above this thread would see it
                # Only the planner's statistics wait: the passes go on.
                log.warning("statistics check failed", exc_info=True)
                return
        if analyzed:
            log.debug("analyzed %s", ", ".join(analyzed))

    def run(self, alive: Any = None) -> None:
        """The loop, until `stop` (or until `alive()` says the parent is gone)."""
        while not self._stop.is_set():
            self._wake.wait(self._poll_s)
            self._contended = not self._sees_arrivals
            self._wake.clear()
            if alive is not None and not alive():
                return
            try:
                while not self._stop.is_set():
                    started = time.monotonic()
                    if not self.drain_once():
                        self._deferred_since = None  # caught up
                        break
                    arrivals = self._wake.is_set()
                    self._limit = self._batch if arrivals else self._quiet_batch
                    self._contended = not self._sees_arrivals
                    if arrivals:
                        # Webhooks arrived during the pass. (The pass after this clear
                        # starts after it: it sees them.) Uncounted (a thread's Event):
                        # taken as load.
                        arrived = self._wake.clear()
                        took = time.monotonic() - started
                        window = max(took, LOAD_WINDOW_S)
                        under_load = arrived is None or arrived >= YIELD_ABOVE_PER_S * window
                        self._contended = self._contended or under_load
                        if self._yield_factor and under_load:
                            self._rest(took, counted=arrived is not None)
            except Exception:
                # The database may be away; events stay queued and are retried.
                log.exception("projection pass failed")

    def _rest(self, took: float, *, counted: bool) -> None:
        """The rest after a pass under load: the factor's, then on while the burst lasts
        (where arrivals are counted), up to `defer_s` since this burst's first rest."""
        began = time.monotonic()
        self._stop.wait(min(MAX_REST_S, self._yield_factor * took))
        if not counted or not self._defer_s:
            return
        if self._deferred_since is None:
            self._deferred_since = began
        length = FIRST_TICK_S
        while not self._stop.is_set():
            tick = time.monotonic()
            if tick - self._deferred_since >= self._defer_s:
                return  # deferred long enough: catch up, even under load
            self._stop.wait(min(length, self._deferred_since + self._defer_s - tick))
            length = DEFER_TICK_S
            arrived = self._wake.clear()
            if arrived is not None and arrived < YIELD_ABOVE_PER_S * (time.monotonic() - tick):
                return  # the burst is over


class _PipeWake:
    """Wake-ups across processes over a pipe. Not a multiprocessing.Event: that one
    shares a lock with the child, and a child killed while holding it would hang every
    webhook's wake-up after it. A byte written without blocking cannot hang anything."""

    def __init__(self, read_fd: int | None = None, write_fd: int | None = None) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd

    @classmethod
    def pair(cls) -> tuple[int, int]:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        return read_fd, write_fd

    def set(self) -> None:
        # A full pipe already holds a wake-up; a closed one has no reader to wake.
        if self.write_fd is not None:
            with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
                os.write(self.write_fd, b"x")

    def wait(self, timeout: float | None = None) -> bool:
        assert self.read_fd is not None
        ready, _, _ = select.select([self.read_fd], [], [], timeout)
        return bool(ready)

    def clear(self) -> int:
        """Empties the pipe; how many wake-ups it held (one per stored event)."""
        assert self.read_fd is not None
        count = 0
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.read_fd, 65536):
                count += len(chunk)
        return count

    def is_set(self) -> bool:
        return self.wait(0)


def _child(settings: Settings, read_fd: Any, parent: int, poll_s: float) -> None:
    """The projector process: its own engine, connections and interpreter."""
    fd = read_fd.detach()
    os.set_blocking(fd, False)
    wake = _PipeWake(read_fd=fd)
    with contextlib.suppress(OSError):
        os.nice(NICE)
    configure_logging(settings.log_level)
    engine = create_db_engine(settings.database_url)
    factory, gate = make_sessionmaker(engine), WriteGate.for_engine(engine)
    refresher = MetricsRefresher.from_settings(settings, factory, gate)
    worker = ProjectorWorker(
        factory,
        settings.ledger_options(),
        poll_s=poll_s,
        batch=batch_for(engine.dialect.name),
        gate=gate,
        wake=wake,
        after_pass=None if refresher is None else refresher.poke,
        yield_factor=settings.projector_yield_factor,
        defer_s=settings.projector_defer_s,
        quiet_batch=QUIET_BATCH,
    )
    if refresher is not None:
        refresher.start()
    try:
        worker.run(alive=lambda: os.getppid() == parent)
    finally:
        if refresher is not None:
            refresher.stop()
        engine.dispose()


class ProjectorProcess:
    """A `ProjectorWorker` in a child process, supervised: restarted if it dies."""

    def __init__(self, settings: Settings, *, poll_s: float = 0.5) -> None:
        self._settings = settings
        self._poll_s = poll_s
        # spawn, not fork: the parent runs threads (the receiver's writers, the event
        # loop) whose locks a forked child would inherit held.
        self._context = multiprocessing.get_context("spawn")
        self._wake = _PipeWake()
        self._proc: Any = None
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> None:
        self._spawn()
        self._supervisor = threading.Thread(
            target=self._supervise, name="projector-supervisor", daemon=True
        )
        self._supervisor.start()
        self.wake()  # drain whatever a previous run left queued

    def _spawn(self) -> None:
        read_fd, write_fd = _PipeWake.pair()
        self._proc = self._context.Process(
            target=_child,
            args=(self._settings, DupFd(read_fd), os.getpid(), self._poll_s),
            name="churn-ledger-projector",
            daemon=True,
        )
        self._proc.start()
        os.close(read_fd)  # the child has its own copy
        old, self._wake = self._wake, _PipeWake(write_fd=write_fd)
        if old.write_fd is not None:
            os.close(old.write_fd)

    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            if self._proc is not None and not self._proc.is_alive():
                log.error("projector process exited (%s): restarting", self._proc.exitcode)
                self.restarts += 1
                time.sleep(min(30, self.restarts))  # a crash loop must not spin
                if not self._stop.is_set():
                    self._spawn()
                    self.wake()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        if self._proc is not None and self._proc.is_alive():
            # SIGTERM: the transaction in flight rolls back; its events stay queued.
            self._proc.terminate()
            self._proc.join(timeout)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout)
