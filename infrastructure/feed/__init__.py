"""Wake-ups from the store: PostgreSQL LISTEN connections that reconnect by themselves.

`ChangeFeed` tells the API's tail what was committed; `CommitListener` wakes the
projector; `reconnect` holds the shared connect-listen-back-off loop and what an
outage looks like. Imports the application, `infrastructure.settings` and
`infrastructure.store`; nothing from the API, read models or CLI.
"""
