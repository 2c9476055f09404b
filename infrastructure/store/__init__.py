"""The event store: persistence wiring, recorders, the append function, history loads.

Owns the events table and the work queue's table (queue changes are written in the same
transaction as the events they follow from), the PostgreSQL append function, bulk SQL
and the store's connection pool. Imports the application, the domain and
`agent_ledger.infrastructure.settings`; it is the bottom room of `infrastructure`.
"""
