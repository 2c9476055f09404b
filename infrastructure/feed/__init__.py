"""Wake-ups from the store: one PostgreSQL LISTEN connection per process, reconnecting.

`StoreNotices` is that connection: it listens to the channels the process's roles
subscribe to and hands them each notice (and, on every reconnect, word that notices may
have been missed). `EventFeed` reads each new batch of events once for the process's
subscribers (the API's tail; in `serve` also the worker and the projector).
`CommitWakeUps` wakes a projector running alone on every commit, reading nothing.
`reconnect` says what an outage looks like. Imports the application,
`agent_ledger.infrastructure.settings` and `agent_ledger.infrastructure.store`; nothing from the
API, read models or CLI.
"""
