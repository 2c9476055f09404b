"""Rows of one table read and written within one projector transaction, flushed in one go."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

import sqlalchemy as sa

from agent_ledger.infrastructure.store.bulk_sql import insert_rows, select_rows, update_rows

Row = TypeVar("Row")


def aware(value: Any) -> Any:
    """SQLite hands back naive datetimes: they were written in UTC."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


class RowBatch(Generic[Row]):
    """A write-back cache of dataclass rows keyed by the table's primary key."""

    def __init__(
        self,
        connection: sa.Connection,
        table: sa.Table,
        make: Callable[..., Row],
        by: str = "execution_id",
        writes: sa.Connection | None = None,
    ):
        self.connection = connection
        self.writes = writes if writes is not None else connection
        self.table = table
        self.make = make
        self.by = by
        self.keys = [c.name for c in table.primary_key.columns]
        self.rows: dict[tuple[Any, ...], Row] = {}
        self._new: set[tuple[Any, ...]] = set()
        self._dirty: set[tuple[Any, ...]] = set()
        self._loaded: set[UUID] = set()
        self._names: list[str] | None = None

    def _values(self, row: Row) -> dict[str, Any]:
        """A row's columns (shallow: the statement is executed before the row changes again)."""
        names = self._names
        if names is None:
            names = self._names = [f.name for f in fields(row)]  # type: ignore[arg-type]
        return {name: getattr(row, name) for name in names}

    def key_of(self, row: Row) -> tuple[Any, ...]:
        return tuple(getattr(row, k) for k in self.keys)

    def load(self, ids: Iterable[UUID]) -> None:
        """Read every row of these executions (one query per 500 ids)."""
        wanted = sorted(set(ids) - self._loaded)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            for record in select_rows(self.connection, self.table, self.by, chunk):
                row = self.make(**{k: aware(v) for k, v in record.items()})
                self.rows.setdefault(self.key_of(row), row)
            self._loaded.update(chunk)

    def known(self, execution_id: UUID) -> None:
        """Say that this execution has no stored rows (it started in this batch)."""
        self._loaded.add(execution_id)

    def get(self, *key: Any) -> Row | None:
        if self.by == self.keys[0] and key[0] not in self._loaded:
            self.load([key[0]])
        return self.rows.get(key)

    def put(self, row: Row) -> None:
        key = self.key_of(row)
        if key not in self.rows or key in self._new:
            self._new.add(key)
        self.rows[key] = row
        self._dirty.add(key)

    def flush(self) -> None:
        """Insert the new rows in one statement, update the changed ones in another."""
        inserts = [self._values(self.rows[k]) for k in self._dirty if k in self._new]
        updates = [self._values(self.rows[k]) for k in self._dirty if k not in self._new]
        insert_rows(self.writes, self.table, inserts)
        update_rows(self.writes, self.table, updates)
        self._new.clear()
        self._dirty.clear()
