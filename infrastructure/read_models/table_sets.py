"""Versioned table sets of the rebuildable projections, and which version is active."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache

import sqlalchemy as sa

from agent_ledger.infrastructure.read_models.tables import (
    event_counts,
    execution_status,
    metric_runs,
    model_usage,
    projection_tracking,
    projection_versions,
    step_latency,
    step_status,
)

# version 1 uses the base names, so a database created before versioning keeps its tables
TABLE_SETS: dict[str, tuple[sa.Table, ...]] = {
    "execution_status": (execution_status, step_status, step_latency),
    "metrics": (metric_runs, event_counts, model_usage),
}


@dataclass(frozen=True)
class TableSet:
    """The tables of one version of one projection."""

    projection: str
    version: int
    tables: dict[str, sa.Table]

    def __getitem__(self, base_name: str) -> sa.Table:
        return self.tables[base_name]

    @property
    def tracking_name(self) -> str:
        return tracking_name(self.projection, self.version)


def tracking_name(projection: str, version: int) -> str:
    """The tracking row of a version: the bare name for version 1."""
    return projection if version == 1 else f"{projection}@v{version}"


def projection_version(name: str) -> tuple[str, int]:
    """The projection and version a tracking row names (`tracking_name` reversed)."""
    projection, _, version = name.partition("@v")
    return projection, int(version or 1)


@cache
def table_set(projection: str, version: int) -> TableSet:
    """The tables of `projection` at `version` (version N > 1 appends `_vN` to every name)."""
    bases = TABLE_SETS[projection]
    if version == 1:
        return TableSet(projection, 1, {t.name: t for t in bases})
    metadata = sa.MetaData()
    tables = {}
    for base in bases:
        copy = base.to_metadata(metadata, name=f"{base.name}_v{version}")
        for index in copy.indexes:
            index.name = sa.sql.quoted_name(f"{index.name}_v{version}", None)
        tables[base.name] = copy
    return TableSet(projection, version, tables)


def active_version(connection: sa.Connection, projection: str) -> int:
    """The version queries read and the projector keeps current (1 until a rebuild)."""
    version = connection.execute(
        sa.select(projection_versions.c.active_version).where(
            projection_versions.c.name == projection
        )
    ).scalar()
    return int(version or 1)


def active_tables(connection: sa.Connection, projection: str) -> TableSet:
    return table_set(projection, active_version(connection, projection))


def active_table_sets(connection: sa.Connection, projections: list[str]) -> dict[str, TableSet]:
    """`active_tables` of several projections, in one query."""
    if not projections:
        return {}
    rows = connection.execute(
        sa.select(projection_versions.c.name, projection_versions.c.active_version).where(
            projection_versions.c.name.in_(projections)
        )
    )
    versions = {row.name: int(row.active_version or 1) for row in rows}
    return {name: table_set(name, versions.get(name, 1)) for name in projections}


def create_version(connection: sa.Connection, projection: str, version: int) -> TableSet:
    """Create a fresh, empty table set for `version`, dropping leftovers of a failed build."""
    tables = table_set(projection, version)
    drop_version(connection, projection, version)
    for table in tables.tables.values():
        table.create(connection)
    connection.execute(
        sa.insert(projection_tracking).values(
            name=tables.tracking_name, position=0, updated_at=datetime.now(UTC)
        )
    )
    return tables


def drop_version(connection: sa.Connection, projection: str, version: int) -> None:
    """Drop a version's tables and tracking row (never version 1's base tables' definitions)."""
    tables = table_set(projection, version)
    for table in reversed(list(tables.tables.values())):
        table.drop(connection, checkfirst=True)
    connection.execute(
        sa.delete(projection_tracking).where(projection_tracking.c.name == tables.tracking_name)
    )


def mark_building(connection: sa.Connection, projection: str, version: int) -> None:
    """Record that `version` is being built (so a second rebuild picks a higher one)."""
    values = {"building_version": version}
    updated = connection.execute(
        sa.update(projection_versions)
        .where(projection_versions.c.name == projection)
        .values(values)
    ).rowcount
    if updated == 0:
        connection.execute(
            sa.insert(projection_versions).values(name=projection, active_version=1, **values)
        )


def next_version(connection: sa.Connection, projection: str) -> int:
    row = connection.execute(
        sa.select(projection_versions.c.active_version, projection_versions.c.building_version)
        .where(projection_versions.c.name == projection)
        .with_for_update()
    ).first()
    if row is None:
        return 2
    return max(int(row.active_version), int(row.building_version or 0)) + 1


def switch_to(connection: sa.Connection, projection: str, version: int) -> None:
    """Make `version` the one queries read; the caller holds the row lock."""
    connection.execute(
        sa.update(projection_versions)
        .where(projection_versions.c.name == projection)
        .values(active_version=version, building_version=None, switched_at=datetime.now(UTC))
    )
