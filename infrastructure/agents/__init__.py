"""Adapters for agents: HTTP agents, the egress rule for their URLs, thread history.

Implements the application's agent ports. Imports the application, the domain,
`agent_ledger.infrastructure.settings` and, for thread history, the read models' status queries.
"""
