"""Tracking rows: how far each projection (version) has applied the store, moved guardedly."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa

from agent_ledger.infrastructure.read_models.deferred_writes import DeferredWrites
from agent_ledger.infrastructure.read_models.registry import VERSIONED_PROJECTIONS
from agent_ledger.infrastructure.read_models.table_sets import (
    TableSet,
    active_table_sets,
    active_tables,
    table_set,
)
from agent_ledger.infrastructure.read_models.tables import projection_tracking, projection_versions


class TrackingConflictError(Exception):
    """Another projector advanced this projection first; this batch was rolled back."""


def tracked_position(connection: sa.Connection, name: str) -> int:
    position = connection.execute(
        sa.select(projection_tracking.c.position).where(projection_tracking.c.name == name)
    ).scalar()
    return int(position or 0)


def active_position(connection: sa.Connection, name: str) -> int:
    """How far the version of `name` that queries read has got."""
    if name in VERSIONED_PROJECTIONS:
        return tracked_position(connection, active_tables(connection, name).tracking_name)
    return tracked_position(connection, name)


def advance_tracking(connection: sa.Connection, name: str, old: int, new: int) -> None:
    """Move the tracked position from `old` to `new`, or fail if someone else moved it."""
    now = datetime.now(UTC)
    if old == 0:
        exists = connection.execute(
            sa.select(projection_tracking.c.name).where(projection_tracking.c.name == name)
        ).first()
        if exists is None:
            connection.execute(
                sa.insert(projection_tracking).values(name=name, position=new, updated_at=now)
            )
            return
    moved = connection.execute(
        sa.update(projection_tracking)
        .where(projection_tracking.c.name == name, projection_tracking.c.position == old)
        .values(position=new, updated_at=now)
    ).rowcount
    if moved != 1:
        raise TrackingConflictError(f"projection {name!r} moved past {old} elsewhere")


def tracked_positions(connection: sa.Connection, names: list[str]) -> dict[str, int]:
    """The tracked position of each of these names (0 for one not tracked yet)."""
    rows = connection.execute(
        sa.select(projection_tracking.c.name, projection_tracking.c.position).where(
            projection_tracking.c.name.in_(names)
        )
    )
    return {name: 0 for name in names} | {row.name: int(row.position) for row in rows}


def tracked_tables(
    connection: sa.Connection, names: list[str]
) -> tuple[dict[str, TableSet], dict[str, str], dict[str, int]]:
    """The active table set of each versioned projection among `names`, each name's tracking
    row and its position: one statement on PostgreSQL (`active_table_sets` and
    `tracked_positions` otherwise)."""
    if connection.dialect.name != "postgresql":
        tables = active_table_sets(connection, [n for n in names if n in VERSIONED_PROJECTIONS])
        tracking = {n: tables[n].tracking_name if n in tables else n for n in names}
        return tables, tracking, tracked_positions(connection, list(tracking.values()))
    versioned = [name in VERSIONED_PROJECTIONS for name in names]
    tables, tracking, positions = {}, {}, {}
    for name, version, position in connection.exec_driver_sql(_TRACKED, (names, versioned)):
        if name in VERSIONED_PROJECTIONS:
            tables[name] = table_set(name, int(version or 1))
            tracking[name] = tables[name].tracking_name
        else:
            tracking[name] = name
        positions[tracking[name]] = int(position or 0)
    return tables, tracking, positions


def advance_all(
    connection: sa.Connection,
    moves: list[tuple[str, int, int]],
    writes: DeferredWrites | None = None,
) -> None:
    """`advance_tracking` for each (name, old, new), in one statement on PostgreSQL; with
    `writes`, that statement also runs the writes they hold."""
    guarded = [move for move in moves if move[1] != 0]
    if writes is None and (connection.dialect.name != "postgresql" or len(guarded) < 2):
        for name, old, new in moves:
            advance_tracking(connection, name, old, new)
        return
    for name, old, new in moves:
        if old == 0:
            advance_tracking(connection, name, old, new)
    parameters = (
        datetime.now(UTC),
        [name for name, _, _ in guarded],
        [old for _, old, _ in guarded],
        [new for _, _, new in guarded],
    )
    if writes is not None:
        rows = writes.send(_ADVANCE, parameters)
    else:
        rows = connection.exec_driver_sql(_ADVANCE, parameters)
    moved = {row[0] for row in rows}
    lost = sorted({name for name, _, _ in guarded} - moved)
    if lost:
        raise TrackingConflictError(f"projections {lost} moved on elsewhere")


_ADVANCE = (
    f'UPDATE "{projection_tracking.name}" AS t SET position = v.new, updated_at = %b '
    "FROM unnest(%b::text[], %b::bigint[], %b::bigint[]) AS v(name, old, new) "
    "WHERE t.name = v.name AND t.position = v.old RETURNING t.name"
)

# a version's tracking row is named as `table_sets.tracking_name` names it
_TRACKED = (
    "SELECT n.name, v.active_version, t.position "
    "FROM unnest(%b::text[], %b::bool[]) AS n(name, versioned) "
    f'LEFT JOIN "{projection_versions.name}" AS v ON n.versioned AND v.name = n.name '
    f'LEFT JOIN "{projection_tracking.name}" AS t ON t.name = CASE '
    "WHEN coalesce(v.active_version, 1) = 1 THEN n.name "
    "ELSE n.name || '@v' || v.active_version END"
)
