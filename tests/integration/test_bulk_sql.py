"""Bulk row statements give the same rows on PostgreSQL (binary arrays) as on SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from agent_ledger.infrastructure.read_models.row_batch import aware
from agent_ledger.infrastructure.store.bulk_sql import (
    add_to_rows,
    insert_rows,
    select_rows,
    update_rows,
)

metadata = sa.MetaData()
things = sa.Table(
    "bulk_things",
    metadata,
    sa.Column("owner", sa.Uuid, primary_key=True),
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("total", sa.BigInteger),
    sa.Column("seconds", sa.Float),
    sa.Column("done", sa.Boolean, nullable=False),
    sa.Column("at", sa.DateTime(timezone=True)),
    sa.Column("detail", sa.JSON),
)

OWNERS = [uuid.uuid4() for _ in range(3)]


def row(owner: uuid.UUID, name: str, **changes: Any) -> dict[str, Any]:
    base = {
        "owner": owner,
        "name": name,
        "count": 1,
        "total": None,
        "seconds": None,
        "done": False,
        "at": None,
        "detail": None,
    }
    return base | changes


@pytest.fixture(params=["postgresql", "sqlite"])
def connection(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Connection]:
    url = (
        request.getfixturevalue("postgres_url").replace("postgresql://", "postgresql+psycopg://")
        if request.param == "postgresql"
        else f"sqlite:///{tmp_path / 'bulk.db'}"
    )
    engine = sa.create_engine(url)
    metadata.drop_all(engine)
    metadata.create_all(engine)
    try:
        with engine.begin() as connection:
            yield connection
    finally:
        metadata.drop_all(engine)
        engine.dispose()


def ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: (str(r["owner"]), r["name"]))


def stored(connection: sa.Connection, owners: list[uuid.UUID]) -> list[dict[str, Any]]:
    rows = select_rows(connection, things, "owner", owners)
    return ordered([{k: aware(v) for k, v in r.items()} for r in rows])


def test_rows_inserted_updated_and_selected_keep_every_type(connection: sa.Connection) -> None:
    at = datetime(2026, 11, 21, 13, 30, 5, 123456, tzinfo=UTC)
    first = row(OWNERS[0], "a", total=2**40, seconds=1.5, done=True, at=at, detail={"k": [1, "x"]})
    second = row(OWNERS[0], "b", detail="plain text")
    third = row(OWNERS[1], "a", count=7)
    insert_rows(connection, things, [first, second, third])

    changed = second | {"count": 3, "done": True, "detail": None}
    update_rows(connection, things, [changed])

    assert stored(connection, [OWNERS[0]]) == [first, changed]
    assert stored(connection, OWNERS) == ordered([first, changed, third])
    assert stored(connection, [OWNERS[2]]) == []
    assert select_rows(connection, things, "owner", []) == []


counters = sa.Table(
    "bulk_counters",
    metadata,
    sa.Column("kind", sa.String(20), primary_key=True),
    sa.Column("bucket", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),
)


def test_added_rows_sum_into_stored_ones_or_are_inserted(connection: sa.Connection) -> None:
    add_to_rows(connection, counters, [{"kind": "a", "bucket": 1, "count": 1, "total": 10}])
    add_to_rows(
        connection,
        counters,
        [
            {"kind": "a", "bucket": 1, "count": 2, "total": 5},
            {"kind": "a", "bucket": 2, "count": 1, "total": 2**40},
        ],
    )
    add_to_rows(connection, counters, [])

    rows = connection.execute(sa.select(counters).order_by(counters.c.bucket)).all()
    assert [tuple(r) for r in rows] == [("a", 1, 3, 15), ("a", 2, 1, 2**40)]
