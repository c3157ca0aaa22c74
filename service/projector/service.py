"""Projection: from the event store to one customer's ledger and payment episodes, the
drain of pending customers, and `rebuild`.

Every projection recomputes whole customers from their stored events, in batches: the
drain, a single customer and `rebuild` share one read, one computation and one write
path, and cannot disagree. Services only flush; the caller's edge commits.
"""

from __future__ import annotations

import logging
import multiprocessing
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from operator import attrgetter
from typing import Any

from sqlalchemy.orm import Session

from service.kit.time import now_ts
from service.ledger.fx import FxTable
from service.ledger.repository import LedgerRepository
from service.projector.compute import (
    BulkRows,
    CustomerRows,
    compute_chunk,
    init_worker,
    needed_rows,
    project_rows,
)
from service.projector.incremental import Incremental
from service.projector.repository import ProjectionRepository
from service.settings import LedgerOptions
from service.stripe_shapes.events import FAILED, LEDGER_EVENTS, PAYMENT_EVENTS
from service.webhooks.repository import StripeEventRepository

log = logging.getLogger("churn_ledger.ledger")


def project_customer(
    session: Session,
    account: str,
    customer_id: str,
    options: LedgerOptions,
    *,
    now: int | None = None,
    fx: FxTable | None = None,
) -> None:
    """Project one customer from all of its stored events (the batch of one)."""
    now = now_ts() if now is None else now
    StripeEventRepository(session).begin_write()  # before any read (SQLite)
    fx = fx or LedgerRepository(session).fx_table(options.reporting_currency)
    _Batch(session, now, options.past_due_grace_days, fx).customers(
        account, [customer_id], incremental=True
    )
    session.flush()


@dataclass
class Plan:
    """A drain pass computed before its transaction (`plan_pending`): its customers, and
    the rows of those recomputed whole with the queued events they were computed with."""

    now: int
    customers: list[tuple[str, str]]
    rows: dict[tuple[str, str], CustomerRows] = field(default_factory=dict)
    queued: dict[tuple[str, str], list[int]] = field(default_factory=dict)


def plan_pending(
    session: Session,
    options: LedgerOptions,
    *,
    limit: int = 200,
    now: int | None = None,
    incremental_from: int | None = None,
) -> Plan:
    """The next pass of `project_pending`, computed in a read transaction (reads only).

    For SQLite, whose one write lock the receiver's commits wait for: a pass that reads
    and computes under it holds every webhook's answer up for as long, and longer under
    load, where the projector runs at a lower CPU priority. `project_pending(plan=)` then
    only writes under the lock, recomputing the customers whose queued events changed
    in between (and those it goes on with incrementally, which are cheap)."""
    events = StripeEventRepository(session)
    now = now_ts() if now is None else now
    plan = Plan(now, sorted(_pass_customers(session, events, options, limit, now)))
    if not plan.customers:
        return plan
    fx = LedgerRepository(session).fx_table(options.reporting_currency)
    batch = _Batch(session, now, options.past_due_grace_days, fx)
    batch.incremental_from = INCREMENTAL_FROM if incremental_from is None else incremental_from
    for account, group in groupby(plan.customers, key=lambda c: c[0]):
        ids = [customer_id for _, customer_id in group]
        long = set(batch._long(account, ids))
        whole = [c for c in ids if c not in long]
        if not whole:
            continue
        queued = events.queued_by_customer(account, whole)  # before the events (as a pass)
        try:
            computed = batch.compute(account, whole)
        except Exception:
            continue  # left to the pass, which records what fails customer by customer
        for customer_id, rows in computed.items():
            plan.rows[(account, customer_id)] = rows
            plan.queued[(account, customer_id)] = queued.get(customer_id, [])
    return plan


def _pass_customers(
    session: Session,
    events: StripeEventRepository,
    options: LedgerOptions,
    limit: int,
    now: int,
) -> list[tuple[str, str]]:
    customers = events.pending_customers(limit, options.max_attempts)
    due = ProjectionRepository(session).due_customers(now, limit)
    return customers + [c for c in due if c not in set(customers)]


def project_pending(
    session: Session,
    options: LedgerOptions,
    *,
    limit: int = 200,
    now: int | None = None,
    incremental_from: int | None = None,
    plan: Plan | None = None,
) -> int:
    """Project up to `limit` customers with queued events (oldest first) or a scheduled
    change that is due, in one batch per account; returns how many were projected.

    A customer with at least `incremental_from` stored ledger events (default
    INCREMENTAL_FROM) is projected incrementally from its stored projection; one with
    fewer is recomputed whole, in bulk with the others.

    `plan` (from `plan_pending`): its customers, its time, and its computed rows for
    those whose queued events are still the ones they were computed with.

    Customers another projector is projecting right now are skipped, not waited for
    (design §8). A batch that fails is retried customer by customer, each in a savepoint:
    one that still fails is recorded on its queued events (attempts, last_error) and
    retried later, without holding back the others.
    """
    events = StripeEventRepository(session)
    events.begin_write()
    if plan is not None:
        now, customers = plan.now, plan.customers
    else:
        now = now_ts() if now is None else now
        customers = _pass_customers(session, events, options, limit, now)
    mine = events.try_lock_customers(sorted(customers))  # one lock order: no deadlocks
    if not mine:
        return 0
    fx = LedgerRepository(session).fx_table(options.reporting_currency)
    batch = _Batch(session, now, options.past_due_grace_days, fx)
    batch.incremental_from = INCREMENTAL_FROM if incremental_from is None else incremental_from
    done = 0
    for account, group in groupby(mine, key=lambda c: c[0]):
        ids = [customer_id for _, customer_id in group]
        try:
            with session.begin_nested():
                batch.customers(account, ids, incremental=True, ready=plan)
            done += len(ids)
            continue
        except Exception:
            if len(ids) == 1:
                done += _record_failure(session, batch, account, ids[0], options.max_attempts)
                continue
        for customer_id in ids:
            try:
                with session.begin_nested():
                    batch.customers(account, [customer_id])
                done += 1
            except Exception:  # a bad event must not stop the others
                done += _record_failure(session, batch, account, customer_id, options.max_attempts)
    return done


def keep_statistics(session: Session) -> list[str]:
    """PostgreSQL: fresh planner statistics of the tables that changed a lot since their
    last (flush only); the tables analyzed."""
    return ProjectionRepository(session).analyze_stale()


def _reason(exc: BaseException | None) -> str:
    # The first line only: a database error's full text carries its statement.
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:2000]


def _record_failure(
    session: Session, batch: _Batch, account: str, customer_id: str, max_attempts: int
) -> int:
    """Count the failure on the customer's queued events; once they have failed
    `max_attempts` times, set the failing event aside as a dead letter and project the
    customer from its other events. 1 if the customer was projected after all."""
    exc = sys.exc_info()[1]
    log.warning(
        "projection failed",
        extra={"fields": {"account": account, "customer": customer_id, "error": _reason(exc)}},
    )
    with session.begin_nested():
        attempts = StripeEventRepository(session).record_failure(account, customer_id, _reason(exc))
    if attempts < max_attempts:
        return 0
    return 1 if _quarantine(session, batch, account, customer_id) else 0


class _Probe(Exception):
    """Rolls a trial projection's savepoint back: a probe never writes."""


def _quarantine(session: Session, batch: _Batch, account: str, customer_id: str) -> bool:
    """Find the queued event the customer's projection fails on, set it aside (dead
    letter, with the reason) and project the customer without it; repeated while another
    one fails. False if the projection fails without any queued event (the cause is
    then not one event: it stays queued with its attempts spent)."""
    events = StripeEventRepository(session)
    now = datetime.now(UTC)
    for _ in range(64):  # each round sets one event aside
        queued = events.queued(account, [customer_id])  # oldest first

        def failure_with(first: int, queued: list[int] = queued) -> str | None:
            """Why projecting with only the oldest `first` queued events fails, or None."""
            try:
                with session.begin_nested():
                    events.set_dead(queued[first:], "probe", now)
                    batch.customers(account, [customer_id])
                    raise _Probe
            except _Probe:
                return None
            except Exception as exc:
                return _reason(exc)

        if not queued or failure_with(0) is not None:
            return False
        # The events before the customer's queued ones were projected: the newest prefix
        # that still projects ends right before the culprit.
        good, bad, reason = 0, len(queued), failure_with(len(queued))
        if reason is None:  # it projects now (the failure was not an event's)
            with session.begin_nested():
                batch.customers(account, [customer_id])
            return True
        while bad - good > 1:
            mid = (good + bad) // 2
            failed = failure_with(mid)
            if failed is None:
                good = mid
            else:
                bad, reason = mid, failed
        with session.begin_nested():
            events.set_dead([queued[bad - 1]], reason, now)
        log.warning(
            "dead letter",
            extra={"fields": {"account": account, "customer": customer_id, "reason": reason}},
        )
        try:
            with session.begin_nested():
                batch.customers(account, [customer_id])
            return True
        except Exception:
            continue
    return False


POOL_CHUNK = 50  # customers per task sent to a worker process
# Going on from the stored projection costs ~10 statements a customer (~5 ms on
# PostgreSQL); recomputing a batch of short histories whole costs a few statements for
# all of them (~0.4 ms a customer plus ~0.1 ms an event). Below this many stored ledger
# events, whole is the faster path: a burst of 16k events over 5,000 customers drained at
# ~200 customers/s incrementally.
INCREMENTAL_FROM = 50


def rebuild(
    session: Session,
    options: LedgerOptions,
    *,
    account: str | None = None,
    batch: int = 200,
    progress: Callable[[int, int], None] | None = None,
    now: int | None = None,
    workers: int = 1,
) -> int:
    """Recompute every customer (of `account`, or all) from the event store; returns
    customers projected. Same results as projecting each customer incrementally: the
    same batch path, over every customer in order.

    A job is its own edge: each batch of `batch` customers is one transaction that locks
    them, reads their events in one query, computes them and writes what changed in
    bulk. A failed or interrupted rebuild leaves every customer either rebuilt or as it
    was (never missing), and the ledger stays readable while it runs. With `workers` > 1
    the computation runs in that many processes.
    """
    now = now_ts() if now is None else now
    events = StripeEventRepository(session)
    customers = events.all_customers(account)
    fx = LedgerRepository(session).fx_table(options.reporting_currency)
    session.commit()
    total = len(customers)
    with _pool(workers, now, options.past_due_grace_days, fx) as pool:
        job = _Batch(session, now, options.past_due_grace_days, fx, pool)
        for start in range(0, total, batch):
            events.begin_write()
            by_account: dict[str, list[str]] = {}
            for acct, customer_id in customers[start : start + batch]:
                by_account.setdefault(acct, []).append(customer_id)
            for acct, ids in by_account.items():
                job.customers(acct, ids, contiguous=True)
            session.commit()
            session.expunge_all()
            done = start // batch + 1
            if done & (done - 1) == 0:  # after batches 1, 2, 4, 8...: tables doubled
                job.repo.analyze_written()
                session.commit()
            if progress:
                progress(min(start + batch, total), total)
    return total


@contextmanager
def _pool(
    workers: int, now: int, grace: int | None, fx: FxTable
) -> Iterator[ProcessPoolExecutor | None]:
    if workers <= 1:
        yield None
        return
    # fork: workers start at once with every module already imported, and never re-run
    # the caller's main script (spawn would, breaking callers without a main guard). They
    # only compute: the connections they inherit are never used, and they end with
    # os._exit, so no finalizer closes them.
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=init_worker, initargs=(now, grace, fx)
    )
    try:
        yield pool
    finally:
        pool.shutdown(cancel_futures=True)


class _Batch:
    """Projection of a batch of customers of one account: the one path of the drain,
    of a single customer and of rebuild."""

    def __init__(
        self,
        session: Session,
        now: int,
        grace: int | None,
        fx: FxTable,
        pool: ProcessPoolExecutor | None = None,
    ) -> None:
        self.session = session
        self.repo = ProjectionRepository(session)
        self.events = StripeEventRepository(session)
        self.now, self.grace, self.fx, self.pool = now, grace, fx, pool
        self.incremental_from = 0  # project_pending sets its own

    def customers(
        self,
        account: str,
        customer_ids: list[str],
        *,
        contiguous: bool = False,
        incremental: bool = False,
        ready: Plan | None = None,
    ) -> None:
        """Project these customers (sorted) of one account, in the caller's transaction.
        `incremental`: those whose stored projection can be gone on from are projected
        from it on (service/projector/incremental.py), the others whole. `ready`: rows
        computed before this transaction (`plan_pending`), taken for every customer
        whose queued events are still those they were computed with."""
        repo, events = self.repo, self.events
        # The per-customer row lock, taken before reading: a rebuild batch and a drain
        # batch holding one customer each wait for the other's commit, then see it.
        repo.lock_customers(account, customer_ids)
        if incremental:
            long = self._long(account, customer_ids)
            step = Incremental(events, repo, self.now, self.grace, self.fx)
            rest, _ = step.customers(account, long, datetime.now(UTC)) if long else ([], set())
            # The metrics refresh recounts the customers projected here (as below).
            done = set(long) - set(rest)
            LedgerRepository(self.session).mark_changed(account, [], sorted(done))
            customer_ids = [c for c in customer_ids if c not in done]
            if not customer_ids:
                return
        # What is queued now is covered by the read below; an event stored after this
        # stays queued (it may be read too, and is then projected twice: no change).
        queued = events.queued_by_customer(account, customer_ids)
        computed: dict[str, CustomerRows] = {}
        if ready is not None:
            computed = {
                c: ready.rows[(account, c)]
                for c in customer_ids
                if (account, c) in ready.rows and ready.queued[(account, c)] == queued.get(c, [])
            }
        missing = [c for c in customer_ids if c not in computed]
        if missing:
            computed |= self.compute(account, missing, contiguous=contiguous)
        handled_at = datetime.now(UTC)
        out = BulkRows()
        for customer_id in customer_ids:
            out.add(account, customer_id, computed[customer_id], handled_at)
        repo.write_bulk(account, customer_ids, out)
        events.dequeue([i for c in customer_ids for i in queued.get(c, [])])
        # The metrics refresh recounts these customers (their ledger rows or their
        # segment may have changed); marked in this same transaction.
        LedgerRepository(self.session).mark_changed(account, [], customer_ids)

    def _long(self, account: str, customer_ids: list[str]) -> list[str]:
        """The customers to go on with incrementally: all, or those with at least
        `incremental_from` ledger events."""
        if not self.incremental_from:
            return customer_ids
        long = self.repo.with_history(
            account, customer_ids, sorted(LEDGER_EVENTS), self.incremental_from
        )
        return [c for c in customer_ids if c in long]

    def compute(
        self, account: str, customer_ids: list[str], *, contiguous: bool = False
    ) -> dict[str, CustomerRows]:
        """The rows of these customers (sorted) recomputed whole from their stored
        events: reads only."""
        events = self.events
        wanted = set(customer_ids)
        # Invoice and charge events only for customers with a failed payment: the same
        # rule as needed_rows, so most of them never leave the database.
        failures = events.first_failures(
            account, customer_ids, contiguous=contiguous, failed_type=FAILED
        )
        stream = events.events_of(
            account,
            customer_ids,
            contiguous=contiguous,
            types=LEDGER_EVENTS,
            flagged_types=PAYMENT_EVENTS,
            flagged=[c for c, at in failures.items() if at <= self.now],
        )
        latest: dict[str, int] = {}

        def groups() -> Iterator[tuple[str, list[Any]]]:
            for customer_id, rows in groupby(stream, key=attrgetter("customer_id")):
                # One first seen after the customer list was taken is left to the drain.
                if customer_id in wanted:
                    listed = list(rows)
                    latest[customer_id] = max(r.created for r in listed)
                    yield customer_id, listed

        computed: dict[str, CustomerRows] = {}
        try:
            for customer_id, rows in self._computed(account, groups()):
                # Incremental projection goes on from these rows only while no event of
                # the customer lies ahead of the clock (it would join the history in the
                # middle later) and no payment failed (episodes read every event).
                rows.incremental = customer_id not in failures and latest[customer_id] <= self.now
                computed[customer_id] = rows
        finally:
            # A customer that fails mid-stream: PostgreSQL's named cursor must be closed
            # now, inside the savepoint. Closed later (by the garbage collector, after
            # the rollback dropped it), its CLOSE fails and aborts the whole transaction.
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        for customer_id in wanted - computed.keys():  # only events no projector reads
            computed[customer_id] = CustomerRows(incremental=customer_id not in failures)
        return computed

    def _computed(
        self, account: str, groups: Iterable[tuple[str, list[Any]]]
    ) -> Iterator[tuple[str, CustomerRows]]:
        if self.pool is None:
            for customer_id, rows in groups:
                yield customer_id, project_rows(
                    account, customer_id, rows, now=self.now,
                    past_due_grace_days=self.grace, fx=self.fx,
                )  # fmt: skip
            return
        # Every task is submitted while the events stream in, then results are collected
        # in order; only the bodies the projectors read cross the process boundary.
        futures = []
        chunk: list[tuple[str, list[tuple[str, str, int, bytes]]]] = []
        for customer_id, rows in groups:
            needed = [(r.event_id, r.type, r.created, r.body) for r in needed_rows(rows, self.now)]
            chunk.append((customer_id, needed))
            if len(chunk) >= POOL_CHUNK:
                futures.append(self.pool.submit(compute_chunk, account, chunk))
                chunk = []
        if chunk:
            futures.append(self.pool.submit(compute_chunk, account, chunk))
        for future in futures:
            yield from future.result()
