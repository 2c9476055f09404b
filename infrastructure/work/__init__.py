"""The worker's side of the work queue: notices of queued work and the worker's thread.

`WorkNotifications` (PostgreSQL NOTIFY on the work channel, through the process's
`StoreNotices`) and `WorkSignals`
(in-process, for the embedded store) wake a worker; `WorkerThread` runs the
application's `Worker` on its own event loop. Imports the application, the store and
the feed; nothing from the API, read models or CLI.
"""
