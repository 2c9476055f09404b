"""Queries of the metrics projection: figures per agent, tool, process or user over a time range,
and the model usage totals of every agent and process."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from agent_ledger.infrastructure.read_models.row_batch import aware
from agent_ledger.infrastructure.read_models.table_sets import active_tables
from agent_ledger.infrastructure.read_models.tables import USAGE_COLUMNS
from agent_ledger.projections.metric_figures import (
    PERCENTILES,
    Figures,
    NameFigures,
    RunFacts,
    SlaTargets,
    figures_by_name,
)
from agent_ledger.projections.metrics import (
    FINISHED_OUTCOMES,
    RUNNING,
    MetricsProjection,
    ModelUsage,
)

_OUTCOMES = {
    "successes": "success",
    "failures": "failure",
    "timeouts": "timeout",
    "cancelled": "cancelled",
    "running": RUNNING,
}


class MetricsQueries:
    """Figures from the metrics runs; PostgreSQL aggregates in SQL, SQLite in Python."""

    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"

    def figures(
        self,
        kind: str,
        targets: SlaTargets,
        *,
        user_id: str | None,
        start: datetime | None = None,
        end: datetime | None = None,
        name: str | None = None,
        series: bool = False,
        per_user: bool = False,
    ) -> list[NameFigures]:
        """Totals per name of `kind` (and per-minute series), runs started in [start, end);
        `per_user` groups them by user instead (and `name` is a user)."""
        with self.engine.connect() as connection:
            t = active_tables(connection, MetricsProjection.name)["metric_runs"]
            group = t.c.user_id if per_user else t.c.name
            where = [t.c.kind == kind]
            for column, value in ((t.c.user_id, user_id), (group, name)):
                if value is not None:
                    where.append(column == value)
            if start is not None:
                where.append(t.c.started_at >= start)
            if end is not None:
                where.append(t.c.started_at < end)
            if not self.postgres:
                return self._in_python(connection, t, group, where, targets, series)
            totals = self._aggregate(connection, t, group, where, targets, minute=False)
            minutes = (
                self._aggregate(connection, t, group, where, targets, minute=True) if series else []
            )
        result = {key[0]: NameFigures(key[0], targets(key[0]), figures) for key, figures in totals}
        for (name_, minute), figures in minutes:
            result[name_].series.append((minute, figures))
        return [result[n] for n in sorted(result)]

    def event_counts(self) -> dict[str, int]:
        """Events applied so far, by type."""
        with self.engine.connect() as connection:
            t = active_tables(connection, MetricsProjection.name)["event_counts"]
            return {r[0]: int(r[1]) for r in connection.execute(sa.select(t.c.type, t.c.count))}

    def model_usage(self) -> dict[str, list[tuple[str, ModelUsage]]]:
        """Model calls, tokens and known cost of every agent and process (by kind, then name)
        since the beginning."""
        with self.engine.connect() as connection:
            t = active_tables(connection, MetricsProjection.name)["model_usage"]
            query = sa.select(t.c.kind, t.c.name, *(t.c[c] for c in USAGE_COLUMNS)).order_by(
                t.c.kind, t.c.name
            )
            result: dict[str, list[tuple[str, ModelUsage]]] = {}
            for r in connection.execute(query):
                usage = ModelUsage(*(int(r._mapping[c]) for c in USAGE_COLUMNS))
                result.setdefault(r.kind, []).append((r.name, usage))
            return result

    def _aggregate(
        self,
        connection: sa.Connection,
        t: sa.Table,
        group: sa.Column[Any],
        where: list[Any],
        targets: SlaTargets,
        *,
        minute: bool,
    ) -> list[tuple[tuple[Any, ...], Figures]]:
        finished = t.c.outcome.in_(FINISHED_OUTCOMES)
        target = (
            sa.case(targets.by_name, value=group, else_=targets.default)
            if targets.by_name
            else sa.literal(targets.default, sa.Float)
        )
        groups: list[Any] = [group.label("name")]
        if minute:
            groups.append(sa.func.date_trunc("minute", t.c.started_at).label("minute"))
        columns: list[Any] = [
            sa.func.count().label("runs"),
            sa.func.coalesce(sa.func.sum(t.c.retries), 0).label("retries"),
            sa.func.count().filter(sa.and_(finished, t.c.duration_ms > target)).label("breaches"),
        ]
        columns += [
            sa.func.count().filter(t.c.outcome == outcome).label(label)
            for label, outcome in _OUTCOMES.items()
        ]
        columns += [
            sa.func.coalesce(sa.func.sum(t.c[name]), 0).label(name) for name in USAGE_COLUMNS
        ]
        columns += [
            sa.func.percentile_disc(fraction)
            .within_group(t.c.duration_ms)
            .filter(sa.and_(finished, t.c.duration_ms.is_not(None)))
            .label(label)
            for label, fraction in PERCENTILES
        ]
        query = sa.select(*groups, *columns).where(*where).group_by(*groups).order_by(*groups)
        result = []
        for r in connection.execute(query):
            figures = Figures(
                runs=r.runs,
                retries=int(r.retries),
                sla_breaches=r.breaches,
                p50_ms=r.p50,
                p95_ms=r.p95,
                p99_ms=r.p99,
                usage=ModelUsage(*(int(r._mapping[name]) for name in USAGE_COLUMNS)),
                **{label: r._mapping[label] for label in _OUTCOMES},
            )
            key = (r.name, r.minute) if minute else (r.name,)
            result.append((key, figures))
        return result

    @staticmethod
    def _in_python(
        connection: sa.Connection,
        t: sa.Table,
        group: sa.Column[Any],
        where: list[Any],
        targets: SlaTargets,
        series: bool,
    ) -> list[NameFigures]:
        query = sa.select(
            group.label("name"),
            t.c.started_at,
            t.c.outcome,
            t.c.duration_ms,
            t.c.retries,
            *(t.c[name] for name in USAGE_COLUMNS),
        ).where(*where)
        runs = [
            RunFacts(
                r.name,
                aware(r.started_at),
                r.outcome,
                r.duration_ms,
                r.retries,
                ModelUsage(*(int(r._mapping[name]) for name in USAGE_COLUMNS)),
            )
            for r in connection.execute(query)
        ]
        return figures_by_name(runs, targets, series=series)
