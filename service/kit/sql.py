"""Dialect-aware SQL pieces shared by repositories."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import Connection, any_, bindparam
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


def in_values(executor: Session | Connection, column: Any, values: Sequence[Any]) -> Any:
    """`column IN (values)`, in one statement. PostgreSQL: `column = ANY(:array)`, one
    parameter however many values, so the statement's text is the same at every size
    (psycopg prepares it after a few runs, where each IN list's length was a new
    statement to parse) and no bind per value is built, rendered and sent."""
    if dialect_name(executor) == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(column.type)))
    return column.in_(list(values))


def among(executor: Session | Connection, column: Any, values: Sequence[Any]) -> Iterator[Any]:
    """`column IN (values)` as the predicates of the statements to run, one each (none
    for no values): on PostgreSQL one `in_values` for all of them; elsewhere an IN list
    per IN_CHUNK values (SQLite's cap on a statement's parameters)."""
    if not values:
        return
    if dialect_name(executor) == "postgresql":
        yield in_values(executor, column, values)
        return
    for chunk in chunks(values, IN_CHUNK):
        yield column.in_(list(chunk))
