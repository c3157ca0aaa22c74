"""The projector as deployed: a supervised process of its own, and several projectors on
one database that neither double count nor wait for each other's customers (design §8)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.app import create_app
from service.db import make_sessionmaker
from service.kit.gate import WriteGate
from service.ledger.models import MrrMovement
from service.projector.service import project_pending, rebuild
from service.projector.worker import ProjectorProcess, ProjectorWorker, _PipeWake
from service.settings import LedgerOptions
from service.webhooks.repository import StripeEventRepository
from service.webhooks.schemas import parse_event
from service.webhooks.service import store_event
from tests.conftest import API_KEY, Database, make_settings
from tests.factories import T0, item, price_payload, subscription_payload
from tests.live import live_server
from tests.signing import event_body, signed_headers
from tests.webhooks.test_endpoints import make_event

T = TypeVar("T")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def sub_event(n: int, customer: str, seats: int = 1, *, created: int = T0) -> bytes:
    """A subscription of `seats` × $10 for `customer`, as of `created`."""
    type_ = "customer.subscription.created" if seats == 1 else "customer.subscription.updated"
    event = make_event(
        event_id=f"evt_w_{n}",
        type_=type_,
        obj=subscription_payload(
            id=f"sub_{customer}",
            customer=customer,
            created=T0,
            items=[item(price_payload(unit_amount=1000), seats)],
        ),
    )
    event["created"] = created
    return event_body(event)


def store(factory, bodies: list[bytes]) -> None:
    with factory() as s:
        for body in bodies:
            store_event(s, body, parse_event(body))
        s.commit()


def wait_for(predicate, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


class TestProjectorProcess:
    def test_serve_projects_in_a_child_process_and_restarts_it(self, fresh_database: Database):
        settings = make_settings(fresh_database.url)
        assert settings.projector_mode == "process"  # the default, as deployed
        app = create_app(settings, fresh_database.engine)
        auth = {"Authorization": f"Bearer {API_KEY}"}
        with live_server(app) as base, httpx.Client(base_url=base, timeout=10) as http:
            projector = app.state.projector
            assert isinstance(projector, ProjectorProcess)
            assert projector.pid not in (None, os.getpid())

            def mrr(customer: str) -> list:
                answer = http.get(f"/v1/customers/{customer}", headers=auth)
                return answer.json()["mrr"] if answer.status_code == 200 else []

            body = sub_event(1, "cus_a", 1)
            assert http.post("/webhooks/stripe", content=body, headers=signed_headers(body))
            assert wait_for(lambda: mrr("cus_a") == [
                {"amount": 1000, "currency": "usd", "display": "10.00"}
            ])  # fmt: skip
            # A projector that dies is started again, and what came meanwhile is projected.
            first = projector.pid
            os.kill(first, signal.SIGKILL)
            body = sub_event(2, "cus_b", 1)
            assert http.post("/webhooks/stripe", content=body, headers=signed_headers(body))
            assert wait_for(lambda: projector.pid != first and mrr("cus_b") != [])
            assert projector.restarts == 1
        # Stopped with the server: no orphan left behind.
        assert wait_for(lambda: not _alive(projector.pid), timeout=10)


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped) is not running.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split()[2] != "Z"


@contextlib.contextmanager
def running(cls: type[ProjectorWorker], **options: Any) -> Iterator[ProjectorWorker]:
    """A worker whose `drain_once` is replaced (so it opens no session), started and
    woken, stopped on the way out."""
    worker = cls(None, LedgerOptions(), poll_s=60, **options)  # type: ignore[arg-type]
    worker.start()
    worker.wake()
    try:
        yield worker
    finally:
        worker.stop()


def recorded(arrivals: list[bool], what: Callable[[ProjectorWorker], T], **options: Any) -> list[T]:
    """`what` of a 16-customer worker at each of its passes, a pass after which webhooks
    arrived (woken) where `arrivals` says so, until the last one finds nothing to do."""
    seen: list[T] = []
    done = threading.Event()

    class Recording(ProjectorWorker):
        def drain_once(self) -> int:
            seen.append(what(self))
            if arrivals[len(seen) - 1]:
                self.wake()
            if len(seen) == len(arrivals):
                done.set()
                return 0
            return 1

    with running(Recording, batch=16, **options):
        assert done.wait(10)
    return seen


class TestYieldingToTheReceiver:
    """Under load (webhooks arriving during a pass faster than YIELD_ABOVE_PER_S), a pass
    of d seconds is followed by `yield_factor` × d of rest; a trickle or a quiet stream
    gets none."""

    @staticmethod
    def pass_starts(yield_factor: float, webhooks_per_pass: int, counted: bool) -> list[float]:
        starts: list[float] = []
        passes = threading.Event()
        wake: Any = None
        if counted:  # serve's wake-up: a pipe, one byte per stored event
            read_fd, write_fd = _PipeWake.pair()
            os.set_blocking(read_fd, False)
            wake = _PipeWake(read_fd, write_fd)

        class Slow(ProjectorWorker):
            def drain_once(self) -> int:
                starts.append(time.monotonic())
                time.sleep(0.1)
                for _ in range(webhooks_per_pass):
                    self.wake()  # what the receiver does on each stored event
                if len(starts) >= 4:
                    passes.set()
                    return 0
                return 1

        try:
            with running(Slow, wake=wake, yield_factor=yield_factor):
                assert passes.wait(10)
        finally:
            if counted:
                os.close(wake.read_fd)
                os.close(wake.write_fd)
        return starts[:4]

    def gaps(self, *args: Any) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.pass_starts(*args))]

    @pytest.mark.parametrize("counted", [True, False], ids=["pipe", "event"])
    def test_passes_rest_in_proportion_under_load(self, counted: bool):
        # 200 events in a 0.1 s pass: 2,000/s.
        gaps = self.gaps(3.0, 200, counted)
        assert min(gaps) >= 0.1 + 3.0 * 0.1 * 0.9, gaps
        assert max(self.gaps(0.0, 200, counted)) < 0.25

    def test_a_counted_trickle_gets_no_rest(self):
        assert max(self.gaps(3.0, 5, True)) < 0.25  # 50/s

    def test_no_rest_when_nothing_arrives(self):
        assert max(self.gaps(3.0, 0, False)) < 0.25


class TestPassSize:
    """A pass takes `batch` customers after a pass during which webhooks arrived (on
    SQLite they wait for its write lock), `quiet_batch` after one during which none did
    (catching up after a burst)."""

    @staticmethod
    def limits(arrivals: list[bool], quiet_batch: int | None) -> list[int]:
        return recorded(arrivals, lambda w: w._limit, quiet_batch=quiet_batch)

    def test_quiet_passes_take_more_customers(self):
        assert self.limits([True, False, False, True, False], 200) == [16, 16, 200, 200, 16]

    def test_without_a_quiet_batch_the_size_stays(self):
        assert self.limits([True, False, False, True, False], None) == [16] * 5


class TestPlanningFirst:
    """With a write gate (SQLite), a pass is read and computed before the gate is taken,
    and only written under it, while webhooks may be waiting for it; where arrivals are
    seen (serve), a pass after which none arrived computes under the gate."""

    @staticmethod
    def planned(arrivals: list[bool], **options: Any) -> list[bool]:
        return recorded(arrivals, lambda w: w._plan_first and w._contended, **options)

    def test_serve_plans_while_webhooks_arrive(self):
        # Woken (the first pass), nothing is known of a load yet.
        got = self.planned([True, False, False, True, False], gate=WriteGate(), quiet_batch=200)
        assert got == [False, True, False, False, True]

    def test_a_counted_trickle_is_computed_under_the_gate(self):
        # One webhook a pass, counted on serve's pipe: no load, so nobody waits long.
        read_fd, write_fd = _PipeWake.pair()
        os.set_blocking(read_fd, False)
        wake = _PipeWake(read_fd, write_fd)
        try:
            got = self.planned(
                [True, True, True, False], gate=WriteGate(), quiet_batch=200, wake=wake
            )
        finally:
            os.close(read_fd)
            os.close(write_fd)
        assert got == [False] * 4

    def test_a_worker_that_cannot_see_arrivals_always_plans(self):
        assert self.planned([True, False, False], gate=WriteGate()) == [True] * 3

    def test_without_a_gate_nothing_is_planned(self):
        assert self.planned([True, False], quiet_batch=200) == [False] * 2

    def test_the_plan_is_read_before_the_gate_is_taken(self, fresh_database: Database):
        factory = make_sessionmaker(fresh_database.engine)
        store(factory, [sub_event(1, "cus_P"), sub_event(2, "cus_Q")])
        order: list[str] = []

        def sessions() -> Session:
            order.append("session")
            return factory()

        class Gate:
            def __enter__(self) -> None:
                order.append("gate")

            def __exit__(self, *exc: object) -> None:
                order.append("released")

        worker = ProjectorWorker(sessions, LedgerOptions(), gate=Gate())  # type: ignore[arg-type]
        assert worker.drain_once() == 2
        # (Then the statistics check's own session, outside the gate.)
        assert order[:4] == ["session", "gate", "session", "released"]
        assert "gate" not in order[4:]
        with factory() as s:
            assert StripeEventRepository(s).count_unhandled() == 0
            assert len(_ledger(s)) == 2


class TestDeferringABurst:
    """Where arrivals are counted, a burst is let pass: no pass while webhooks keep
    arriving faster than YIELD_ABOVE_PER_S, up to `defer_s`; then the backlog is caught
    up; a trickle is projected at once."""

    @staticmethod
    def passes_during(
        per_s: float,
        for_s: float,
        defer_s: float,
        every: float = 0.005,
        busy: list[tuple[float, bool]] | None = None,
    ) -> list[float]:
        """Pass start times (from the first) while a feeder writes `per_s` wake-ups a
        second for `for_s` seconds, as serve's receiver does per stored event, those due
        every `every` seconds at once. `busy`: each pass's start and `worker.busy`."""
        read_fd, write_fd = _PipeWake.pair()
        os.set_blocking(read_fd, False)
        wake = _PipeWake(read_fd, write_fd)
        starts: list[float] = []

        class Fast(ProjectorWorker):
            def drain_once(self) -> int:
                starts.append(time.monotonic())
                if busy is not None:
                    busy.append((starts[-1], self.busy))
                time.sleep(0.01)
                return 1  # always more to do: only resting spaces the passes

        stop = threading.Event()

        def feed() -> None:
            began = time.monotonic()
            sent = 0
            while not stop.is_set() and time.monotonic() - began < for_s:
                due = int((time.monotonic() - began) * per_s)
                for _ in range(due - sent):
                    wake.set()
                sent = max(sent, due)
                time.sleep(every)

        feeder = threading.Thread(target=feed)
        feeder.start()
        try:
            with running(Fast, wake=wake, yield_factor=3.0, defer_s=defer_s):
                feeder.join()
                time.sleep(0.5)
        finally:
            stop.set()
            os.close(read_fd)
            os.close(write_fd)
        return [t - starts[0] for t in starts]

    def test_no_pass_while_the_burst_lasts(self):
        starts = self.passes_during(2000, 1.2, defer_s=5)
        during = [t for t in starts if 0 < t < 1.1]
        assert not during, starts[:10]
        # ... and caught up once it is over, not after the whole deferral.
        assert any(1.1 <= t < 1.8 for t in starts), starts[:10]

    def test_a_long_burst_is_deferred_only_so_long(self):
        starts = self.passes_during(2000, 2.0, defer_s=0.6)
        assert any(0.5 <= t < 1.2 for t in starts), starts[:10]
        assert not [t for t in starts if 0 < t < 0.5], starts[:10]

    def test_catching_up_under_load_is_busy_a_trickle_is_not(self):
        """What the metrics refresher is told after each pass (`after_pass(busy)`)."""
        seen: list[tuple[float, bool]] = []
        self.passes_during(2000, 2.0, defer_s=0.6, busy=seen)
        first = seen[0][0]
        catching_up = [b for t, b in seen if 0.7 <= t - first < 1.9]
        assert catching_up and all(catching_up), seen[:10]
        assert not seen[0][1]  # the burst's first pass: nothing deferred yet
        trickle: list[tuple[float, bool]] = []
        self.passes_during(100, 0.6, defer_s=5, busy=trickle)
        assert trickle and not any(b for _, b in trickle), trickle[:10]

    def test_a_trickle_is_projected_at_once(self):
        # 100/s: each 10 ms pass sees about one arrival: no load, no rest.
        starts = self.passes_during(100, 0.6, defer_s=5)
        assert len([t for t in starts if t < 0.6]) > 10, starts[:10]

    def test_a_bunched_trickle_is_not_held_up_for_a_tick(self):
        # 200/s arriving 10 at a time: a 10 ms pass right after a bunch sees a burst's
        # rate. The rest that follows ends at the first short tick, not after 0.2 s.
        starts = self.passes_during(200, 1.2, defer_s=5, every=0.05)
        steady = [t for t in starts if 0.2 <= t <= 1.1]
        gaps = [b - a for a, b in itertools.pairwise(steady)]
        assert steady and max(gaps) < 0.16, gaps


class TestWriteGateAcrossProcesses:
    def test_a_second_process_waits_for_the_holder(self, tmp_path):
        lock = tmp_path / "db.sqlite.write-lock"
        holder = subprocess.Popen(
            [sys.executable, "-c",
             "import sys, time\nfrom service.kit.gate import WriteGate\n"
             f"g = WriteGate({str(lock)!r})\n"
             "with g:\n    print('in', flush=True)\n    time.sleep(0.6)\n"],
            cwd=ROOT, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert holder.stdout is not None and holder.stdout.readline().strip() == "in"
        started = time.monotonic()
        with WriteGate(lock):
            waited = time.monotonic() - started
        holder.wait(5)
        assert waited > 0.3


class TestConcurrentProjectors:
    def test_customers_held_by_another_projector_are_skipped_not_waited_for(
        self, fresh_database: Database
    ):
        if fresh_database.engine.dialect.name != "postgresql":
            pytest.skip("SQLite serializes projectors on its write lock")
        factory = make_sessionmaker(fresh_database.engine)
        store(factory, [sub_event(n, c) for n, c in enumerate(("cus_a", "cus_b"))])
        with factory() as holder, factory() as other:
            # Another projector holds cus_a (its transaction is still open).
            assert StripeEventRepository(holder).try_lock_customers([("", "cus_a")]) == [
                ("", "cus_a")
            ]
            started = time.monotonic()
            done = project_pending(other, LedgerOptions(), now=T0 + 86_400)
            other.commit()
            assert time.monotonic() - started < 2  # no wait on the held customer
            assert done == 1
            queued = StripeEventRepository(other).pending_customers(10, 10)
            assert queued == [("", "cus_a")]
            holder.rollback()

    def test_two_worker_processes_never_double_count(self, fresh_database: Database):
        # Many customers, each with several changes, drained by two `churn-ledger worker`
        # processes at once: the ledger must equal a rebuild of the same store.
        factory = make_sessionmaker(fresh_database.engine)
        env = dict(os.environ, DATABASE_URL=fresh_database.url, LOG_LEVEL="WARNING")
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "service.cli", "worker", "--poll", "0.05"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        try:
            # Both up before there is work: a worker stopped while still starting would
            # die of the signal, and one that started late would have nothing to compete for.
            for w in workers:
                assert w.stderr is not None
                assert b"projector running" in w.stderr.readline()
            store(factory, [
                sub_event(c * 10 + seats, f"cus_{c:03d}", seats, created=T0 + seats * 86_400)
                for c in range(60) for seats in range(1, 5)
            ])  # fmt: skip

            def drained() -> bool:
                with factory() as s:
                    return StripeEventRepository(s).count_unhandled() == 0

            assert wait_for(drained, timeout=60)
        finally:
            for w in workers:
                w.send_signal(signal.SIGTERM)
            errors = [w.communicate(timeout=20)[1] for w in workers]
        assert all(w.returncode == 0 for w in workers), errors
        with Session(fresh_database.engine) as s:
            live = _ledger(s)
            assert len(live) == 60 * 4
            rebuild(s, LedgerOptions(), now=int(time.time()))
            assert _ledger(s) == live

    def test_threads_draining_one_store_agree_with_rebuild(self, fresh_database: Database):
        factory = make_sessionmaker(fresh_database.engine)
        store(factory, [
            sub_event(c * 10 + seats, f"cus_{c:03d}", seats, created=T0 + seats * 86_400)
            for c in range(40) for seats in range(1, 4)
        ])  # fmt: skip
        gate = WriteGate.for_engine(fresh_database.engine)
        errors: list[BaseException] = []

        def drain() -> None:
            try:
                while True:
                    with gate or contextlib.nullcontext(), factory() as s:
                        done = project_pending(s, LedgerOptions(), limit=7)
                        s.commit()
                    if not done:
                        return
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=drain) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        with Session(fresh_database.engine) as s:
            assert StripeEventRepository(s).count_unhandled() == 0
            live = _ledger(s)
            assert len(live) == 40 * 3
            rebuild(s, LedgerOptions(), now=int(time.time()))
            assert _ledger(s) == live


def _ledger(s: Session) -> list[tuple]:
    query = select(MrrMovement.customer_id, MrrMovement.day, MrrMovement.delta)
    return [tuple(r) for r in s.execute(query.order_by(MrrMovement.customer_id, MrrMovement.day))]
