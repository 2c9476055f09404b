"""Tracking rows move together and only from where the projector read them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from agent_ledger.infrastructure.read_models.tracking import (
    TrackingConflictError,
    advance_all,
    tracked_positions,
)
from agent_ledger.infrastructure.schema import initialize_schema
from agent_ledger.infrastructure.settings import Settings
from agent_ledger.infrastructure.store.persistence import read_model_engine

pytestmark = pytest.mark.postgres


@pytest.fixture(params=["postgresql", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    settings = Settings(database_url=url, jwt_secret="x" * 40, data_dir=tmp_path)
    initialize_schema(settings)
    engine = read_model_engine(settings)
    try:
        yield engine
    finally:
        engine.dispose()


def test_every_projection_advances_from_where_it_was_read(engine: sa.Engine) -> None:
    names = [f"one-{engine.dialect.name}", f"two-{engine.dialect.name}", "new"]
    with engine.begin() as connection:
        advance_all(connection, [(names[0], 0, 10), (names[1], 0, 20)])
    with engine.begin() as connection:
        assert tracked_positions(connection, names) == {names[0]: 10, names[1]: 20, "new": 0}
        advance_all(connection, [(names[0], 10, 15), (names[1], 20, 25), ("new", 0, 5)])
    with engine.connect() as connection:
        assert tracked_positions(connection, names) == {names[0]: 15, names[1]: 25, "new": 5}


def test_a_projection_moved_elsewhere_fails_the_whole_round(engine: sa.Engine) -> None:
    names = [f"three-{engine.dialect.name}", f"four-{engine.dialect.name}"]
    with engine.begin() as connection:
        advance_all(connection, [(names[0], 0, 10), (names[1], 0, 10)])
    with pytest.raises(TrackingConflictError), engine.begin() as connection:
        advance_all(connection, [(names[0], 10, 12), (names[1], 9, 12)])  # the second is stale
    with engine.connect() as connection:
        assert tracked_positions(connection, names) == {names[0]: 10, names[1]: 10}
