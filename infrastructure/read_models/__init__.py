"""The read side: read-model tables and migrations, the projector, rebuilds, health.

The projector applies the store's events to each projection's tables with its tracking
row in the same transaction (`projector`, `tracking`, `registry`), parks events it
cannot apply (`parked`), rebuilds versioned table sets side by side (`rebuild`,
`table_sets`); each projection's batch writer sits beside its queries. Imports the
application, the projections, `agent_ledger.infrastructure.store` (bulk SQL) and
`agent_ledger.infrastructure.feed.reconnect`; nothing from the API, the CLI or the worker.
"""
