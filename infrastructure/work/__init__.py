"""The worker's side of the work queue: what wakes a worker, and the worker's thread.

A worker running beside the API is woken by the process's `EventFeed`. Alone, it is
woken by `WorkNotices` on PostgreSQL (the work channel's notices, through the process's
`StoreNotices`) and by `EmbeddedWorkFeed` on the embedded store (the two kinds of event
a worker reacts to, read after saves in this process and by a poll). `WorkerThread`
runs the application's `Worker` on its own event loop. Imports the application, the store and
the feed; nothing from the API, read models or CLI.
"""
