"""Projection: from the event store to one customer's ledger and payment episodes, the
drain of pending customers, and `rebuild`.

Every projection recomputes the whole customer from its stored events (cheap: a
customer's history is small), so incremental projection and `rebuild` share one code
path and cannot disagree. Services only flush; the caller's edge commits.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import UTC, date, datetime
from itertools import groupby
from operator import attrgetter
from typing import Any

from sqlalchemy.orm import Session

from service.kit.time import now_ts
from service.ledger.fx import FxTable
from service.ledger.repository import LedgerRepository
from service.ledger.timeline import Projection
from service.payments.repository import AlertRepository
from service.projector.compute import (
    BulkRows,
    CustomerRows,
    compute_chunk,
    compute_customer,
    customer_rows,
    init_worker,
    needed_rows,
    project_rows,
)
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
) -> Projection:
    repo, events = ProjectionRepository(session), StripeEventRepository(session)
    customer = repo.lock_customer(account, customer_id)
    rows = list(events.customer_events(account, customer_id))
    now = now_ts() if now is None else now
    fx = fx or LedgerRepository(session).fx_table(options.reporting_currency)
    result = compute_customer(rows, now=now, past_due_grace_days=options.past_due_grace_days)
    out = customer_rows(account, customer_id, result, fx)
    # Same lock, same transaction as the ledger: episodes and their alerts.
    repo.sync_episodes(account, customer_id, out.episodes)
    AlertRepository(session).enqueue_alerts(out.alerts)
    repo.replace_customer_rows(account, customer_id, out.states, out.changes, out.warnings)
    touched = repo.sync_movements(account, customer_id, out.movements)
    # The metrics jobs recompute only what changed; marked in this same transaction.
    LedgerRepository(session).mark_changed(account, sorted(touched))
    customer.first_mrr_day = out.first_mrr_day
    customer.next_change_at = out.next_change_at
    handled_at = datetime.now(UTC)
    customer.projected_at = handled_at
    events.mark_handled([r.id for r in rows], handled_at)
    session.flush()
    return result.projection


def project_pending(
    session: Session,
    options: LedgerOptions,
    *,
    limit: int = 200,
    now: int | None = None,
) -> int:
    """Project customers with unhandled events (or a scheduled change that is due).

    Each customer runs in a savepoint: one that fails is recorded on its events
    (attempts, last_error) and retried later, without holding back the others.
    Returns how many customers were projected.
    """
    repo, events = ProjectionRepository(session), StripeEventRepository(session)
    now = now_ts() if now is None else now
    events.mark_customerless_handled(datetime.now(UTC))
    customers = events.pending_customers(limit, options.max_attempts)
    customers += [c for c in repo.due_customers(now, limit) if c not in customers]
    fx = LedgerRepository(session).fx_table(options.reporting_currency)
    done = 0
    for account, customer_id in sorted(customers):  # one lock order: no deadlocks
        try:
            with session.begin_nested():
                project_customer(session, account, customer_id, options, now=now, fx=fx)
            done += 1
        except Exception as exc:  # a bad event must not stop the others
            log.exception("projection failed", extra={"fields": {"customer": customer_id}})
            with session.begin_nested():
                events.record_failure(account, customer_id, f"{type(exc).__name__}: {exc}")
    return done


POOL_CHUNK = 50  # customers per task sent to a worker process


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
    customers projected. Same results as projecting each customer incrementally.

    A job is its own edge: each batch of `batch` customers is one transaction that locks
    them, reads their events in one query, computes them and replaces their rows in bulk.
    A failed or interrupted rebuild leaves every customer either rebuilt or as it was
    (never missing), and the ledger stays readable while it runs. With `workers` > 1 the
    computation runs in that many processes: measured on 2 cores, about 1.3x faster when
    the events are already handled, no faster on a never-projected store (marking every
    event handled is then most of the time, and is serial).
    """
    now = now_ts() if now is None else now
    events = StripeEventRepository(session)
    events.mark_customerless_handled(datetime.now(UTC))
    customers = events.all_customers(account)
    fx = LedgerRepository(session).fx_table(options.reporting_currency)
    session.commit()
    total = len(customers)
    with _pool(workers, now, options.past_due_grace_days, fx) as pool:
        job = _Rebuild(session, now, options.past_due_grace_days, fx, pool)
        for start in range(0, total, batch):
            by_account: dict[str, list[str]] = {}
            for acct, customer_id in customers[start : start + batch]:
                by_account.setdefault(acct, []).append(customer_id)
            for acct, ids in by_account.items():
                job.customers(acct, ids)
            session.commit()
            session.expunge_all()
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


class _Rebuild:
    def __init__(
        self,
        session: Session,
        now: int,
        grace: int | None,
        fx: FxTable,
        pool: ProcessPoolExecutor | None,
    ) -> None:
        self.session = session
        self.repo = ProjectionRepository(session)
        self.events = StripeEventRepository(session)
        self.now, self.grace, self.fx, self.pool = now, grace, fx, pool
        self.dirty: dict[str, set[date]] = {}  # days marked by an earlier batch

    def customers(self, account: str, customer_ids: list[str]) -> None:
        """Rebuild these customers (sorted) of one account, in the caller's transaction."""
        repo, events = self.repo, self.events
        # The same per-customer lock as project_customer, taken before reading: a worker
        # projecting one of them waits for this batch to commit, then sees its result.
        repo.lock_customers(account, customer_ids)
        handled_at = datetime.now(UTC)
        # Every event marked handled must be among those read. On PostgreSQL, receivers
        # keep storing events meanwhile: mark first, then read (one stored in between is
        # read too, and projected again later, which changes nothing). On SQLite the lock
        # above holds the database write lock, so nothing is stored in between: read
        # first, from pages the marking has not yet rewritten.
        mark_first = not repo.holds_write_lock
        if mark_first:
            events.mark_customers_handled(account, customer_ids, handled_at)
        wanted = set(customer_ids)
        # Invoice and charge events only for customers with a failed payment: the same
        # rule as needed_rows, so most of them never leave the database.
        stream = events.events_of_range(
            account,
            customer_ids[0],
            customer_ids[-1],
            types=LEDGER_EVENTS,
            flagged_types=PAYMENT_EVENTS,
            flag_type=FAILED,
            flag_until=self.now,
        )
        groups = (
            (customer_id, list(rows))
            for customer_id, rows in groupby(stream, key=attrgetter("customer_id"))
            # One first seen after the customer list was taken is left to the worker.
            if customer_id in wanted
        )
        out = BulkRows()
        seen: set[str] = set()
        for customer_id, rows in self._computed(account, groups):
            seen.add(customer_id)
            out.add(account, customer_id, rows, handled_at)
        if not mark_first:
            events.mark_customers_handled(account, customer_ids, handled_at)
        for customer_id in wanted - seen:  # only events no projector reads: empty rows
            out.add(account, customer_id, CustomerRows(), handled_at)
        old_days = repo.delete_customers_rows(account, customer_ids)
        repo.insert_bulk(out)
        dirty = self.dirty.setdefault(account, set())
        days = (old_days | {m["day"] for m in out.movements}) - dirty
        LedgerRepository(self.session).mark_changed(account, sorted(days))
        dirty.update(days)

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
