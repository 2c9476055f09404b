"""A projector round's writes, held back and sent with its tracking update as one statement.

Each projection's batch writes through `bulk_sql` statements that return nothing (inserts,
updates, additions, each over `unnest` arrays). On PostgreSQL, `DeferredWrites` stands in for
the connection in those calls and keeps them; `send` then runs them as data-modifying
`WITH` queries of the statement that moves the tracking rows: one round trip and one
statement for the round instead of one per table. Semantics stay those of one transaction:
every part runs to completion, an error in any fails the whole, and the parts cannot
interfere, since each writes rows no other part of the round writes (one statement per
table and kind; inserted and updated rows of a table are different rows). Reads (the
prefetches) go to the connection itself, and see nothing of the round's writes, which no
projection needs: it reads only its own rows, before it writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import sqlalchemy as sa


class DeferredWrites:
    """The part of a connection `bulk_sql`'s writers use, keeping statements until `send`."""

    def __init__(self, connection: sa.Connection):
        self.connection = connection
        self.dialect = connection.dialect
        self._statements: list[str] = []
        self._parameters: list[Any] = []

    def exec_driver_sql(self, statement: str, parameters: Sequence[Any]) -> None:
        """Keep a write that returns nothing (its `%b` parameters, in order)."""
        self._statements.append(statement)
        self._parameters.extend(parameters)

    def as_connection(self) -> sa.Connection:
        """This, typed as what the batch writers expect (they call only the methods above)."""
        return cast(sa.Connection, self)

    def send(self, statement: str, parameters: Sequence[Any]) -> sa.CursorResult[Any]:
        """Run `statement` with every kept write before it, as one statement; returns its rows."""
        kept = ", ".join(f"w{i} AS ({s})" for i, s in enumerate(self._statements))
        text = f"WITH {kept} {statement}" if kept else statement
        result = self.connection.exec_driver_sql(text, (*self._parameters, *parameters))
        self._statements.clear()
        self._parameters.clear()
        return result


def deferred_writes(connection: sa.Connection) -> DeferredWrites | None:
    """Writes held back for one statement, on PostgreSQL (elsewhere each is run at once)."""
    return DeferredWrites(connection) if connection.dialect.name == "postgresql" else None
