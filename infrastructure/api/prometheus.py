"""Prometheus figures, read from the store and the read models at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.registry import Collector, CollectorRegistry

from agent_ledger.application.executions import Executions
from agent_ledger.domain.execution_state import ExecutionStatus
from agent_ledger.infrastructure.read_models.health import projection_lags
from agent_ledger.infrastructure.read_models.metrics_queries import MetricsQueries
from agent_ledger.infrastructure.read_models.table_sets import active_tables
from agent_ledger.projections.metrics import AGENT, PROCESS, ModelUsage, usd
from agent_ledger.projections.step_status import LATENCY_BUCKETS


class ReadModelCollector(Collector):
    """Events appended, executions by status (and those waiting), projection lag, step latency
    histograms, and the model calls, tokens and cost of every agent and process.

    Everything comes from the projections' tables, so every API process exports the same
    figures and they survive restarts.
    """

    def __init__(self, executions: Executions, engine: sa.Engine):
        self.executions = executions
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily | HistogramMetricFamily]:
        yield self._events_appended()
        lags = projection_lags(self.executions, self.engine)
        head = GaugeMetricFamily("agent_ledger_store_position", "Position of the store's head")
        head.add_metric([], lags[0].head if lags else self.executions.last_position())
        yield head
        position = GaugeMetricFamily(
            "agent_ledger_projection_position", "Last store position applied", labels=["projection"]
        )
        behind = GaugeMetricFamily(
            "agent_ledger_projection_lag_events", "Events not yet applied", labels=["projection"]
        )
        seconds = GaugeMetricFamily(
            "agent_ledger_projection_lag_seconds",
            "Age of the oldest event not yet applied",
            labels=["projection"],
        )
        parked = GaugeMetricFamily(
            "agent_ledger_projection_parked_events",
            "Stored events the projection could not apply and passed by",
            labels=["projection"],
        )
        for lag in lags:
            position.add_metric([lag.name], lag.position)
            behind.add_metric([lag.name], lag.events)
            seconds.add_metric([lag.name], lag.seconds)
            parked.add_metric([lag.name], lag.parked)
        yield from (position, behind, seconds, parked)
        usage = MetricsQueries(self.engine).model_usage()
        for kind, label in ((AGENT, "agent"), (PROCESS, "process")):
            yield from self._model_usage(usage.get(kind, []), kind, label)
        with self.engine.connect() as connection:
            tables = active_tables(connection, "execution_status")
            yield from self._executions_by_status(connection, tables["execution_status"])
            yield self._step_latency(connection, tables["step_latency"])

    def _events_appended(self) -> CounterMetricFamily:
        family = CounterMetricFamily(
            "agent_ledger_events_appended",
            "Events appended to the store, by type (as applied by the metrics projection)",
            labels=["type"],
        )
        for type_name, count in sorted(MetricsQueries(self.engine).event_counts().items()):
            family.add_metric([type_name], count)
        return family

    @staticmethod
    def _model_usage(
        usages: list[tuple[str, ModelUsage]], kind: str, label: str
    ) -> Iterator[CounterMetricFamily]:
        """Per agent or process (no user label: one series per user would be too many)."""
        whose = "each model agent" if kind == AGENT else "each process's executions"
        calls = CounterMetricFamily(
            f"agent_ledger_{label}_model_calls",
            f"Language model calls of {whose}",
            labels=[label],
        )
        unpriced = CounterMetricFamily(
            f"agent_ledger_{label}_unpriced_model_calls",
            f"Language model calls of {whose} whose cost is unknown (no price or token counts)",
            labels=[label],
        )
        tokens = CounterMetricFamily(
            f"agent_ledger_{label}_tokens",
            f"Tokens of the language model calls of {whose}, by type (prompt or completion)",
            labels=[label, "type"],
        )
        cost = CounterMetricFamily(
            f"agent_ledger_{label}_cost_usd",
            f"Known cost in USD of the language model calls of {whose} (not the unpriced ones)",
            labels=[label],
        )
        for name, usage in usages:
            calls.add_metric([name], usage.model_calls)
            unpriced.add_metric([name], usage.unpriced_calls)
            tokens.add_metric([name, "prompt"], usage.prompt_tokens)
            tokens.add_metric([name, "completion"], usage.completion_tokens)
            cost.add_metric([name], usd(usage.cost_nano_usd))
        yield from (calls, unpriced, tokens, cost)

    @staticmethod
    def _executions_by_status(
        connection: sa.Connection, table: sa.Table
    ) -> Iterator[GaugeMetricFamily]:
        """Every status, 0 when no execution has it; and those waiting, on a gauge of its own."""
        query = sa.select(table.c.status, sa.func.count()).group_by(table.c.status)
        counts = {str(status): int(count) for status, count in connection.execute(query)}
        family = GaugeMetricFamily(
            "agent_ledger_executions", "Executions by status", labels=["status"]
        )
        for status in dict.fromkeys([*(s.value for s in ExecutionStatus), *sorted(counts)]):
            family.add_metric([status], counts.get(status, 0))
        yield family
        yield GaugeMetricFamily(
            "agent_ledger_executions_waiting",
            "Executions waiting for a signal now: every attempt they have under way waits",
            value=counts.get(ExecutionStatus.WAITING.value, 0),
        )

    @staticmethod
    def _step_latency(connection: sa.Connection, table: sa.Table) -> HistogramMetricFamily:
        family = HistogramMetricFamily(
            "agent_ledger_step_duration_seconds",
            "Duration of completed and failed steps, from first start to end",
            labels=["process", "step"],
        )
        steps: dict[tuple[str, str], dict[int, tuple[int, int]]] = {}
        query = sa.select(table.c.process_name, table.c.step_id, table.c.bucket, table.c["count"])
        for process, step, bucket, count, sum_us in connection.execute(
            query.add_columns(table.c.sum_us)
        ):
            steps.setdefault((process, step), {})[bucket] = (int(count), int(sum_us))
        bounds = [*(str(b) for b in LATENCY_BUCKETS), "+Inf"]
        for (process, step), counts in sorted(steps.items()):
            cumulative, buckets = 0, []
            for index, bound in enumerate(bounds):
                cumulative += counts.get(index, (0, 0))[0]
                buckets.append((bound, float(cumulative)))
            total_us = sum(s for _, s in counts.values())
            family.add_metric([process, step], buckets, total_us / 1_000_000)
        return family


def metrics_registry(executions: Executions, engine: sa.Engine) -> CollectorRegistry:
    """A registry of this app's own (not the process-global one, which tests would share)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReadModelCollector(executions, engine))
    return registry
