"""`churn-ledger jobs ...`: the metric jobs (mounted by service/cli.py)."""

from __future__ import annotations

import contextlib
from datetime import date
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy.orm import Session

from service.db import DatabaseNotMigratedError, create_db_engine, ensure_migrated
from service.settings import get_settings

app = typer.Typer(help="Metric jobs: precomputed tables for /v1/metrics.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)


@app.callback()
def jobs() -> None:
    """Metric jobs: precomputed tables for /v1/metrics."""


@app.command()
def run(
    full: Annotated[
        bool, typer.Option("--full", help="Every account, not only changed ones")
    ] = False,
    account: Annotated[
        list[str] | None, typer.Option(help="Only this account ('' for the platform)")
    ] = None,
    today: Annotated[
        str | None, typer.Option(help="UTC day to compute through (YYYY-MM-DD)")
    ] = None,
) -> None:
    """Refresh the metric tables of accounts whose ledger changed (or never computed).
    A running service does this by itself; this is for batch loads and `--full`."""
    from service.kit.gate import WriteGate
    from service.metrics.refresh import refresh

    try:
        day = date.fromisoformat(today) if today else None
    except ValueError:
        console.print(f"error: --today {today!r} is not a day (YYYY-MM-DD)", markup=False)
        raise typer.Exit(2) from None
    engine = create_db_engine(get_settings().database_url)
    try:
        ensure_migrated(engine)
    except DatabaseNotMigratedError as exc:
        console.print(f"[red]refusing to run:[/red] {exc}")
        raise typer.Exit(2) from None
    # SQLite: take turns with a running service's writers (its receiver and projector).
    gate = WriteGate.for_engine(engine) or contextlib.nullcontext()
    with gate, Session(engine, expire_on_commit=False) as session:
        result = refresh(session, accounts=account or None, full=full, today=day)
        session.commit()
    console.print(
        f"refreshed {len(result.accounts)} account(s), {result.ledger_rows} ledger rows "
        f"in {result.seconds:.2f}s"
    )
