"""Span records as the OpenTelemetry SDK's `ReadableSpan`s, and the exporter settings pick."""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace.status import Status, StatusCode

from agent_ledger.projections.traces import SpanRecord

SCOPE = InstrumentationScope("agent_ledger.traces")
DEFAULT_SERVICE_NAME = "agent-ledger"


def traces_enabled(enabled_setting: bool) -> bool:
    """On with `AGENT_LEDGER_OTEL=true` or an `OTEL_EXPORTER_OTLP_ENDPOINT`."""
    return enabled_setting or bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def service_resource() -> Resource:
    """The resource spans are exported under (`OTEL_SERVICE_NAME`, else agent-ledger)."""
    return Resource.create(
        {SERVICE_NAME: os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME}
    )


def otlp_exporter() -> SpanExporter:
    """OTLP over HTTP, configured by the standard `OTEL_EXPORTER_OTLP_*` variables."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def readable_span(record: SpanRecord, resource: Resource) -> ReadableSpan:
    """One span record as the SDK's exporters take it."""
    flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)
    context = trace.SpanContext(record.trace_id, record.span_id, is_remote=False, trace_flags=flags)
    parent = (
        None
        if record.parent_id is None
        else trace.SpanContext(
            record.trace_id, record.parent_id, is_remote=record.remote_parent, trace_flags=flags
        )
    )
    status = (
        Status(StatusCode.UNSET)
        if record.error is None
        else Status(StatusCode.ERROR, record.error[:500])
    )
    model_call = record.attributes.get("gen_ai.operation.name") == "chat"  # a remote call
    return ReadableSpan(
        record.name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=record.attributes,
        kind=trace.SpanKind.CLIENT if model_call else trace.SpanKind.INTERNAL,
        status=status,
        start_time=record.start_ns,
        end_time=record.end_ns,
        instrumentation_scope=SCOPE,
    )
