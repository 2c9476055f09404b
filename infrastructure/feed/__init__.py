"""Wake-ups from the store: one PostgreSQL LISTEN connection per process, reconnecting.

`StoreNotices` is that connection: it listens to the channels the process's roles
subscribe to and hands them each notice (and, on every reconnect, word that notices may
have been missed). `ChangeFeed` tells the API's tail what was committed; `CommitListener`
wakes the projector; `reconnect` says what an outage looks like. Imports the
application, `infrastructure.settings` and `infrastructure.store`; nothing from the
API, read models or CLI.
"""
