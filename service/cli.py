"""churn-ledger commands."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Annotated

import click
import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError
from typer.core import TyperGroup

from jobs.metrics.cli import app as jobs_app
from jobs.sync.cli import backfill_command, reconcile_command
from service.db import (
    DatabaseNotMigratedError,
    create_db_engine,
    current_revision,
    ensure_migrated,
    head_revision,
    upgrade,
)
from service.settings import get_settings

# soft_wrap: printed lines are never hard-wrapped at 80 columns when stderr is not a
# terminal (a pipe, CI, a test): commands meant for copy-paste stay on one line.
console = Console(stderr=True, soft_wrap=True)


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


class _Commands(TyperGroup):
    """Every command's bad configuration or unreachable database is one line on stderr and
    exit code 2, not a traceback of hundreds of lines."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = "".join(f"{p}: " for p in first["loc"]).upper()
            console.print(f"error: invalid configuration: {where}{first['msg']}", markup=False)
        except (ArgumentError, NoSuchModuleError) as exc:
            console.print(f"error: DATABASE_URL is not usable: {_one_line(exc)}", markup=False)
        except DBAPIError as exc:
            # The driver's own first line (host, port, file; never a password or a
            # statement's parameters, which stay in the exception only).
            cause = exc.orig if exc.orig is not None else exc
            console.print(
                f"error: database: {type(cause).__name__}: {_one_line(cause)}", markup=False
            )
        raise typer.Exit(2)


app = typer.Typer(help="Revenue-churn ledger for Stripe.", no_args_is_help=True, cls=_Commands)
app.add_typer(jobs_app, name="jobs")
dead_letters_app = typer.Typer(
    help="Events set aside because their projection kept failing.", no_args_is_help=True
)
app.add_typer(dead_letters_app, name="dead-letters")
app.command("backfill")(backfill_command)
app.command("reconcile")(reconcile_command)


@app.command()
def migrate(revision: Annotated[str, typer.Argument(help="Target revision")] = "heads") -> None:
    """Apply database migrations (SQLite or PostgreSQL, from DATABASE_URL)."""
    engine = create_db_engine(get_settings().database_url)
    before = current_revision(engine)
    upgrade(engine, revision)
    console.print(f"database migrated: {before or 'empty'} -> {current_revision(engine)}")


@app.command()
def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    run_migrations: Annotated[
        bool, typer.Option("--migrate", help="Apply migrations before serving")
    ] = False,
) -> None:
    """Run the HTTP service (webhook receiver, metrics API)."""
    import uvicorn

    from service.kit.telemetry import configure_logging, logging_config

    settings = get_settings()
    engine = create_db_engine(settings.database_url)
    if run_migrations:
        upgrade(engine)
    try:
        _require_migrated(engine)
    finally:
        engine.dispose()
    # Only once the server is going to run: a refusal is one line on stderr, and the
    # process's logging is left as it was.
    configure_logging(settings.log_level)
    if not settings.stripe_webhook_secrets:
        console.print(
            "[yellow]STRIPE_WEBHOOK_SECRETS is empty: every webhook will be refused[/yellow]"
        )
    uvicorn.run(
        "service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        log_config=logging_config(settings.log_level),
        access_log=False,
        # A worker answers the supervisor's pings only once it has imported the app; on a
        # loaded machine that took longer than uvicorn's 5 s, and it was killed at start.
        timeout_worker_healthcheck=60,
    )


@app.command()
def status() -> None:
    """Show the database revision against the code's head; exit 1 unless they match."""
    engine = create_db_engine(get_settings().database_url)
    current, head = current_revision(engine), head_revision()
    console.print(f"database: {current or 'empty (not migrated)'}  code head: {head}")
    if current != head:
        console.print("not migrated: run `churn-ledger migrate`")
        raise typer.Exit(1)


def _rebuild_workers() -> int:
    """The CPUs this process may run on, at most 4. With 1 worker the projection's own
    Python is ~75% of a rebuild: on a 2-core machine 2 workers took a 1M-event rebuild
    from 18,748 to 25,630 ev/s (SQLite), 16,564 to 20,924 (PostgreSQL). Capped because one
    process reads and writes the database for all of them."""
    try:
        cpus = len(os.sched_getaffinity(0))  # a container's CPU set, not the host's
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


@app.command()
def rebuild(
    account: Annotated[
        str | None, typer.Option(help="Only this Connect account ('' for the platform)")
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Customers per commit")] = 2000,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="Processes computing customers (1: in this one); default: the CPUs, at most 4",
        ),
    ] = _rebuild_workers(),
) -> None:
    """Recompute the whole ledger from the event store (identical to incremental)."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn
    from sqlalchemy.orm import Session

    from service.projector.service import rebuild as rebuild_ledger

    settings = get_settings()
    engine = create_db_engine(settings.database_url)
    _require_migrated(engine)
    started = time.perf_counter()
    with (
        Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as progress,
        Session(engine, expire_on_commit=False) as session,
    ):
        task = progress.add_task("customers", total=None)
        customers = rebuild_ledger(
            session,
            settings.ledger_options(),
            account=account,
            batch=batch,
            workers=workers,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
        if account is None:
            # Every customer was recomputed: the reporting amounts are all in this one.
            from service.ledger.service import record_reporting_currency

            record_reporting_currency(session, settings.ledger_options())
            session.commit()
    console.print(f"rebuilt {customers} customers in {time.perf_counter() - started:.1f}s")


@app.command("fx-load")
def fx_load(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
) -> None:
    """Load FX rates to the reporting currency from a CSV (currency,day,rate)."""
    from sqlalchemy.orm import Session

    from service.ledger.fx import FxFileError, FxRateError, read_fx_csv
    from service.ledger.service import apply_fx_rates

    settings = get_settings()
    engine = create_db_engine(settings.database_url)
    _require_migrated(engine)
    try:
        quotes = read_fx_csv(path)
    except FxFileError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if not quotes:
        console.print("no rates in file")
        return
    with Session(engine) as session:
        try:
            recomputed = apply_fx_rates(session, settings.ledger_options(), quotes)
        except FxRateError as exc:
            console.print(f"[red]{path}: {exc}[/red]")
            raise typer.Exit(2) from None
        session.commit()
    console.print(f"loaded {len(quotes)} rates; {recomputed} movements recomputed")


@app.command("fx-sync")
def fx_sync(
    since: Annotated[
        str | None,
        typer.Option(
            help="Rates from this day on (YYYY-MM-DD; default: the ledger's first row in "
            "another currency)"
        ),
    ] = None,
) -> None:
    """Fetch the ECB's daily reference rates and store them as rates to the reporting
    currency; only new or changed days are stored, and their reporting amounts
    recomputed. Weekends and holidays take the last rate published before them."""
    import contextlib

    from service.db import make_sessionmaker
    from service.kit.gate import WriteGate
    from service.ledger.ecb import EcbError
    from service.ledger.fx import FxRateError
    from service.ledger.fxsync import http_client, sync_once

    try:
        day = date.fromisoformat(since) if since else None
    except ValueError:
        console.print(f"error: --since {since!r} is not a day (YYYY-MM-DD)", markup=False)
        raise typer.Exit(2) from None
    settings = get_settings()
    engine = create_db_engine(settings.database_url)
    _require_migrated(engine)
    gate = WriteGate.for_engine(engine) or contextlib.nullcontext()
    with http_client() as client:
        try:
            result = sync_once(
                make_sessionmaker(engine), settings.ledger_options(), client, gate=gate, since=day
            )
        except (EcbError, FxRateError) as exc:
            console.print(f"error: fx-sync: {exc}; nothing stored", markup=False)
            raise typer.Exit(1) from None
    console.print(
        f"ECB {result.feed} through {result.latest}: {result.stored} rates stored, "
        f"{result.recomputed} movements recomputed"
        + ("; the metrics refresh follows (or `churn-ledger jobs run`)" if result.stored else "")
    )


@app.command()
def worker(poll: Annotated[float, typer.Option(help="Seconds between polls")] = 1.0) -> None:
    """Run the projector as its own process (receivers can then run without it)."""
    import signal

    from service.db import make_sessionmaker
    from service.kit.gate import WriteGate
    from service.kit.telemetry import configure_logging
    from service.ledger.fxsync import FxSyncer
    from service.metrics.refresh import MetricsRefresher
    from service.projector.worker import ProjectorWorker, batch_for

    settings = get_settings()
    configure_logging(settings.log_level)
    engine = create_db_engine(settings.database_url)
    _require_migrated(engine)
    factory, gate = make_sessionmaker(engine), WriteGate.for_engine(engine)
    # The metric tables are refreshed where the projector runs (design §10).
    refresher = MetricsRefresher.from_settings(settings, factory, gate)
    projector = ProjectorWorker(
        factory,
        settings.ledger_options(),
        poll_s=poll,
        batch=batch_for(engine.dialect.name),
        gate=gate,
        after_pass=None if refresher is None else refresher.poke,
    )
    # Blocked before the worker thread starts (it inherits the mask): SIGTERM from an
    # orchestrator, or Ctrl-C, is then received here only, and ends in a clean stop.
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    fx_syncer = FxSyncer.from_settings(settings, factory, gate)
    if refresher is not None:
        refresher.start()
    if fx_syncer is not None:
        fx_syncer.start()
    projector.start()
    console.print("projector running; Ctrl-C to stop")
    try:
        signal.sigwait(stop_signals)
    finally:
        projector.stop()
        if fx_syncer is not None:
            fx_syncer.stop()
        if refresher is not None:
            refresher.stop()


@dead_letters_app.command("list")
def dead_letters_list(
    account: Annotated[str | None, typer.Option(help="Only this account ('' the platform)")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 100,
) -> None:
    """The newest dead letters: event, customer, attempts and the reason."""
    from sqlalchemy.orm import Session

    from service.webhooks.service import dead_letters

    engine = create_db_engine(get_settings().database_url)
    _require_migrated(engine)
    with Session(engine) as session:
        found = dead_letters(session, account, limit)
    out = Console(soft_wrap=True)
    for d in found.data:
        out.print(
            f"{d.dead_at:%Y-%m-%dT%H:%M:%SZ} {d.account or '-'} {d.customer_id} {d.event_id} "
            f"{d.type} attempts={d.attempts} {d.reason}",
            markup=False,
            highlight=False,
        )
    console.print(f"{found.total} dead letter(s)")


@dead_letters_app.command("replay")
def dead_letters_replay(
    account: Annotated[str | None, typer.Option(help="Only this account ('' the platform)")] = None,
    event: Annotated[str | None, typer.Option(help="Only this Stripe event id (evt_...)")] = None,
) -> None:
    """Put dead letters back on the projection queue with fresh attempts (after a fix)."""
    from sqlalchemy.orm import Session

    from service.webhooks.service import replay_dead_letters

    engine = create_db_engine(get_settings().database_url)
    _require_migrated(engine)
    with Session(engine) as session:
        n = replay_dead_letters(session, account, event)
        session.commit()
    console.print(f"requeued {n} dead letter(s); a running projector takes them now")


def _require_migrated(engine: Engine) -> None:
    try:
        ensure_migrated(engine)
    except DatabaseNotMigratedError as exc:
        console.print(f"[red]refusing to run:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=1, help="Simulated customers")] = 100,
    months: Annotated[int, typer.Option(min=1, help="Simulated months")] = 12,
    seed: int = 7,
    serve: Annotated[
        bool, typer.Option("--serve", help="Keep the server running (Ctrl-C stops it)")
    ] = False,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="With --serve: port (default free)")
    ] = None,
) -> None:
    """A simulated Stripe account sends signed webhooks to a real server; see the metrics,
    then the dashboard's URL and an API key (--serve keeps that server up to open it)."""
    try:
        from sim.demo import run_demo
    except ModuleNotFoundError as exc:
        # The simulator is a dev tool (its own distribution, churn-ledger-sim): a production
        # install has none of it. Any other missing module is a real error.
        if exc.name not in ("sim", "sim.demo"):
            raise
        console.print(
            "churn-ledger demo is a dev tool, not part of this install: "
            "run `make demo` from a checkout of churn-ledger",
            soft_wrap=True,
        )
        raise typer.Exit(1) from None

    run_demo(
        customers=customers,
        months=months,
        seed=seed,
        console=Console(soft_wrap=True),
        serve=serve,
        port=port,
    )


if __name__ == "__main__":
    app()
