"""Dialect-aware SQL pieces shared by repositories."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

T = TypeVar("T")
IN_CHUNK = 1000  # values per IN list: far below SQLite's and psycopg's parameter limits


def dialect_name(executor: Session | Connection) -> str:
    if isinstance(executor, Connection):
        return executor.dialect.name
    return executor.get_bind().dialect.name


def insert_for(session: Session | Connection, table: Any) -> Any:
    """An INSERT that supports ON CONFLICT on both PostgreSQL and SQLite."""
    if dialect_name(session) == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def chunks(items: Sequence[T], size: int = 500) -> Iterator[Sequence[T]]:
    """`items` in slices of at most `size`: IN lists and bulk statements stay far below
    SQLite's and psycopg's parameter limits."""
    for i in range(0, len(items), size):
        yield items[i : i + size]
