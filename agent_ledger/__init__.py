"""Agent Ledger, installed under one name: `agent_ledger.domain`, `agent_ledger.application`,
`agent_ledger.infrastructure` and `agent_ledger.projections`.

The four layers live at the top of the repository; `agent_ledger/` holds a symbolic link to
each, so the checkout, the editable install and the built wheel all import them by the same
names, and nothing is installed under a generic top-level name.
"""
