"""Telemetry: the executions' OpenTelemetry traces, exported from the store like a projection."""
