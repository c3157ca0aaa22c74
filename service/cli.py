"""churn-ledger commands."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from service.db import (
    DatabaseNotMigratedError,
    create_db_engine,
    current_revision,
    ensure_migrated,
    head_revision,
    upgrade,
)
from service.settings import get_settings

app = typer.Typer(help="Revenue-churn ledger for Stripe.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def migrate(revision: Annotated[str, typer.Argument(help="Target revision")] = "head") -> None:
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

    from service.ops.telemetry import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level)
    engine = create_db_engine(settings.database_url)
    if run_migrations:
        upgrade(engine)
    try:
        ensure_migrated(engine)
    except DatabaseNotMigratedError as exc:
        console.print(f"[red]refusing to serve:[/red] {exc}")
        raise typer.Exit(2) from None
    finally:
        engine.dispose()
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
        access_log=False,
    )


@app.command()
def status() -> None:
    """Show the database revision against the code's head."""
    engine = create_db_engine(get_settings().database_url)
    console.print(f"database: {current_revision(engine)}  code head: {head_revision()}")


@app.command()
def demo(
    events: Annotated[int, typer.Option(help="Subscriptions to simulate")] = 20,
) -> None:
    """Start a real server on a fresh SQLite database and send it signed Stripe events."""
    from service.demo import run_demo

    run_demo(subscriptions=events, console=Console())


if __name__ == "__main__":
    app()
