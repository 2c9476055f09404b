"""Many rows of one table written by one statement whose text never changes.

On PostgreSQL the rows travel as one binary array per column (`unnest`), so the statement is
parsed and planned once and prepared by the driver; a multi-row VALUES list would be a
new text, parsed anew, for every batch size. Other databases use executemany.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

Rows = Sequence[dict[str, Any]]

_POSTGRES = postgresql.dialect()  # type: ignore[no-untyped-call]


def insert_rows(connection: sa.Connection, table: sa.Table, rows: Rows) -> None:
    """Insert every row (each a dict with a value for every column)."""
    if not rows:
        return
    if connection.dialect.name != "postgresql":
        connection.execute(sa.insert(table), list(rows))
        return
    connection.exec_driver_sql(_insert_statement(table), _arrays(table, rows))


def update_rows(connection: sa.Connection, table: sa.Table, rows: Rows) -> None:
    """Update every row, found by its primary key, to the values given for each column."""
    if not rows:
        return
    if connection.dialect.name != "postgresql":
        keys = [c.name for c in table.primary_key.columns]
        statement = (
            sa.update(table)
            .where(*(table.c[k] == sa.bindparam(f"b_{k}") for k in keys))
            .values(
                {c.name: sa.bindparam(f"b_{c.name}") for c in table.columns if c.name not in keys}
            )
        )
        connection.execute(statement, [{f"b_{k}": v for k, v in row.items()} for row in rows])
        return
    connection.exec_driver_sql(_update_statement(table), _arrays(table, rows))


def add_to_rows(connection: sa.Connection, table: sa.Table, rows: Rows) -> None:
    """Add each row's non-key values to the stored row with its key, or insert it."""
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(_add_statement(table), _arrays(table, rows))
        return
    statement = sqlite.insert(table)
    added = {
        c.name: table.c[c.name] + statement.excluded[c.name]
        for c in table.columns
        if c.name not in keys
    }
    connection.execute(statement.on_conflict_do_update(index_elements=keys, set_=added), rows)


def select_rows(
    connection: sa.Connection, table: sa.Table, column: str, values: Sequence[Any]
) -> list[dict[str, Any]]:
    """Every row whose `column` holds one of `values`, as dicts of column values."""
    if not values:
        return []
    if connection.dialect.name != "postgresql":
        query = sa.select(table).where(table.c[column].in_(values))
        return [dict(record._mapping) for record in connection.execute(query)]
    result = connection.exec_driver_sql(_select_statement(table, column), (list(values),))
    return [dict(record._mapping) for record in result]


def _arrays(table: sa.Table, rows: Rows) -> tuple[list[Any], ...]:
    return tuple(
        [convert(row[column.name]) for row in rows]
        for column, convert in zip(table.columns, _converters(table), strict=True)
    )


@cache
def _converters(table: sa.Table) -> list[Callable[[Any], Any]]:
    """One value per column as the array of its type expects it (JSON as text)."""
    return [_converter(column.type) for column in table.columns]


def _converter(kind: sa.types.TypeEngine[Any]) -> Callable[[Any], Any]:
    if isinstance(kind, sa.JSON):
        return lambda value: json.dumps(value, separators=(",", ":"))
    if isinstance(kind, sa.Float):
        return lambda value: None if value is None else float(value)
    if isinstance(kind, sa.Integer):
        return lambda value: None if value is None else int(value)
    return lambda value: value


def _array_type(column: sa.Column[Any]) -> str:
    if isinstance(column.type, sa.JSON):
        return "text[]"  # carried as text, turned into JSON by the statement
    return f"{column.type.compile(dialect=_POSTGRES)}[]"


def _unnest(table: sa.Table) -> str:
    arrays = ", ".join(f"%b::{_array_type(c)}" for c in table.columns)
    names = ", ".join(f'"{c.name}"' for c in table.columns)
    return f"unnest({arrays}) AS v({names})"


def _value(column: sa.Column[Any]) -> str:
    cast = "::json" if isinstance(column.type, sa.JSON) else ""
    return f'v."{column.name}"{cast}'


@cache
def _insert_statement(table: sa.Table) -> str:
    names = ", ".join(f'"{c.name}"' for c in table.columns)
    values = ", ".join(_value(c) for c in table.columns)
    return f'INSERT INTO "{table.name}" ({names}) SELECT {values} FROM {_unnest(table)}'


@cache
def _add_statement(table: sa.Table) -> str:
    keys = [c.name for c in table.primary_key.columns]
    conflict = ", ".join(f'"{k}"' for k in keys)
    sums = ", ".join(
        f'"{c.name}" = "{table.name}"."{c.name}" + excluded."{c.name}"'
        for c in table.columns
        if c.name not in keys
    )
    return f"{_insert_statement(table)} ON CONFLICT ({conflict}) DO UPDATE SET {sums}"


@cache
def _select_statement(table: sa.Table, column: str) -> str:
    names = ", ".join(f'"{c.name}"' for c in table.columns)
    kind = _array_type(table.c[column])
    return f'SELECT {names} FROM "{table.name}" WHERE "{column}" = ANY(%b::{kind})'


@cache
def _update_statement(table: sa.Table) -> str:
    keys = {c.name for c in table.primary_key.columns}
    changes = ", ".join(f'"{c.name}" = {_value(c)}' for c in table.columns if c.name not in keys)
    match = " AND ".join(f't."{k}" = v."{k}"' for k in sorted(keys))
    return f'UPDATE "{table.name}" AS t SET {changes} FROM {_unnest(table)} WHERE {match}'
