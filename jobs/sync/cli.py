"""`churn-ledger backfill` and `churn-ledger reconcile` (registered by service/cli.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import stripe
import typer
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress, SpinnerColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy.orm import Session

from jobs.sync.backfill import RESOURCES, BackfillOptions, run_backfill
from jobs.sync.reconcile import ReconcileReport, reconcile
from jobs.sync.stripe_client import StripeApi, StripeNotConfiguredError, make_stripe_client
from service.db import DatabaseNotMigratedError, create_db_engine, ensure_migrated
from service.kit.money import display
from service.kit.time import utc_day
from service.settings import get_settings

console = Console(stderr=True, soft_wrap=True)

AccountOption = Annotated[
    str | None,
    typer.Option(
        "--account", help="Stripe Connect account (acct_...); default: the platform itself"
    ),
]


def _setup(account: str | None) -> tuple[Session, StripeApi]:
    settings = get_settings()
    if account is not None and not account.startswith("acct_"):
        console.print("[red]--account must be a Stripe account id (acct_...)[/red]")
        raise typer.Exit(2)
    engine = create_db_engine(settings.database_url)
    try:
        ensure_migrated(engine)
        client = make_stripe_client(settings, account=account)
    except (DatabaseNotMigratedError, StripeNotConfiguredError) as exc:
        console.print(f"[red]refusing to run:[/red] {exc}")
        raise typer.Exit(2) from None
    return Session(engine, expire_on_commit=False), StripeApi(client)


def backfill_command(
    account: AccountOption = None,
    since: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"], help="Ignore invoices and ended subscriptions before this UTC day"
        ),
    ] = None,
) -> None:
    """Import the Stripe account's history (resumable; re-running stores nothing new)."""
    session, api = _setup(account)
    settings = get_settings()
    options = BackfillOptions(
        account=account or "",
        since=None if since is None else int(since.replace(tzinfo=UTC).timestamp()),
    )
    columns = (SpinnerColumn(), "{task.description}", MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress, session:
        tasks = {r: progress.add_task(r, total=None) for r in (*RESOURCES, "ledger")}

        def show(resource: str, count: int, finished: bool) -> None:
            progress.update(tasks[resource], completed=count, total=count if finished else None)

        try:
            report = run_backfill(session, api, options, settings.ledger_options(), progress=show)
        except stripe.StripeError as exc:
            console.print(f"[red]Stripe error, stopped (re-run to resume):[/red] {exc}")
            raise typer.Exit(1) from None
    for name, stats in report.resources.items():
        note = " (done in an earlier run)" if stats.skipped else ""
        note += " (resumed)" if stats.resumed else ""
        console.print(f"{name}: {stats.fetched} fetched, {stats.stored} new events{note}")
    console.print(
        f"{report.projected_customers} customers projected; {report.requests} API requests "
        f"({report.retries} retried) in {report.seconds:.1f}s"
    )


def reconcile_command(
    account: AccountOption = None,
    repair: Annotated[
        bool, typer.Option("--repair", help="Store corrective snapshots for every drift")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="JSON on stdout, no table")] = False,
) -> None:
    """Compare each subscription's MRR in the ledger with Stripe's current object."""
    session, api = _setup(account)
    settings = get_settings()
    with session:
        try:
            report = reconcile(
                session, api, settings.ledger_options(), account=account or "", repair=repair
            )
        except stripe.StripeError as exc:
            console.print(f"[red]Stripe error:[/red] {exc}")
            raise typer.Exit(1) from None
        session.commit()
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
    else:
        typer.echo(
            f"account {report.account or '(platform)'} as of {utc_day(report.as_of)}: "
            f"{len(report.differences)} of {report.checked} subscriptions differ"
            + (f", {report.repaired} repaired" if repair else "")
        )
        if report.differences:
            Console().print(drift_table(report))
    if report.unresolved or (report.differences and not repair):
        raise typer.Exit(1)  # drift left: scripts and cron can alert on the exit code


def drift_table(report: ReconcileReport) -> Table:
    table = Table(title="MRR drift")
    for column in ("subscription", "customer", "ledger", "stripe", "delta", "status", "repair"):
        amount = column in ("ledger", "stripe", "delta")
        table.add_column(column, justify="right" if amount else "left")
    for d in report.differences:
        status = f"{d.ledger_status or '-'} → {d.stripe_status or 'missing'}"
        table.add_row(
            d.subscription_id,
            d.customer_id or "-",
            f"{display(d.ledger_mrr, d.currency)} {d.currency}",
            f"{display(d.stripe_mrr, d.currency)} {d.currency}",
            f"{display(d.delta, d.currency)} {d.currency}",
            status,
            d.repair_event_id or "",
        )
    return table
