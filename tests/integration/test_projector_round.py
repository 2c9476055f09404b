"""A projector round reads its versions and positions in one go and writes in one statement,
with nothing of it kept when any part fails."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from agent_ledger.infrastructure.read_models.deferred_writes import deferred_writes
from agent_ledger.infrastructure.read_models.table_sets import (
    active_table_sets,
    create_version,
    mark_building,
    switch_to,
)
from agent_ledger.infrastructure.read_models.tables import event_index
from agent_ledger.infrastructure.read_models.tracking import (
    TrackingConflictError,
    advance_all,
    tracked_positions,
    tracked_tables,
)
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.bulk_sql import insert_rows
from agent_ledger.infrastructure.store.persistence import read_model_engine

pytestmark = pytest.mark.postgres


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    url = request.getfixturevalue("empty_database") if request.param == "postgresql" else None
    settings = Settings(database_url=url, jwt_secret="x" * 40, data_dir=tmp_path)
    initialize_schema(settings)
    engine = read_model_engine(settings)
    try:
        yield engine
    finally:
        engine.dispose()


def an_entry(position: int) -> dict[str, object]:
    return {"position": position, "user_id": "u", "execution_id": uuid.uuid4(), "type": "t"}


def index_positions(connection: sa.Connection) -> list[int]:
    query = sa.select(event_index.c.position).order_by(event_index.c.position)
    return [int(p) for p in connection.execute(query).scalars()]


def test_a_round_reads_the_active_version_and_its_tracking_row_as_the_separate_reads_do(
    engine: sa.Engine,
) -> None:
    names = ["execution_status", "metrics", "event_index"]
    with engine.begin() as connection:
        advance_all(connection, [("execution_status", 0, 7), ("event_index", 0, 9)])
        mark_building(connection, "metrics", 2)
        create_version(connection, "metrics", 2)
        advance_all(connection, [("metrics@v2", 0, 4)])
        switch_to(connection, "metrics", 2)
    with engine.connect() as connection:
        tables, tracking, positions = tracked_tables(connection, names)
        expected = active_table_sets(connection, ["execution_status", "metrics"])
        assert tables == expected
        assert tracking == {
            "execution_status": "execution_status",
            "metrics": "metrics@v2",
            "event_index": "event_index",
        }
        assert positions == tracked_positions(connection, list(tracking.values()))
        assert positions == {"execution_status": 7, "metrics@v2": 4, "event_index": 9}


def a_round(engine: sa.Engine, name: str, old: int, new: int, positions: list[int]) -> None:
    """Index `positions` and move `name` from `old` to `new`, the projector's way."""
    with engine.begin() as connection:
        writes = deferred_writes(connection)
        target = writes.as_connection() if writes is not None else connection
        for position in positions:
            insert_rows(target, event_index, [an_entry(position)])
        advance_all(connection, [(name, old, new)], writes)


def test_held_back_writes_are_applied_with_the_tracking_move(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        advance_all(connection, [("round-a", 0, 1)])
    a_round(engine, "round-a", 1, 3, [2, 3])
    with engine.connect() as connection:
        assert index_positions(connection) == [2, 3]
        assert tracked_positions(connection, ["round-a"]) == {"round-a": 3}


def test_a_failing_held_back_write_keeps_nothing_of_the_round(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        advance_all(connection, [("round-b", 0, 1)])
        insert_rows(connection, event_index, [an_entry(5)])
    with pytest.raises(sa.exc.IntegrityError):
        a_round(engine, "round-b", 1, 5, [4, 5])  # 5 is there already
    with engine.connect() as connection:
        assert index_positions(connection) == [5]
        assert tracked_positions(connection, ["round-b"]) == {"round-b": 1}


def test_a_tracking_row_moved_elsewhere_keeps_nothing_of_the_round(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        advance_all(connection, [("round-c", 0, 10)])
    with pytest.raises(TrackingConflictError):
        a_round(engine, "round-c", 9, 11, [11])  # stale: it is at 10
    with engine.connect() as connection:
        assert index_positions(connection) == []
        assert tracked_positions(connection, ["round-c"]) == {"round-c": 10}
