"""Helpers the tests import, one concern a module; test modules import from here, never from
each other.

- `waiting`: `wait_until`, polling a condition with a deadline.
- `tokens`: bearer tokens and headers minted with a test secret.
- `databases`: a fresh PostgreSQL database of a test's own.
- `stores`: an event store with its schema; settings for short leases.
- `workers`: the environment of real `agent-ledger worker` processes.
- `server`: a real `agent-ledger serve` process (e2e) and its environment.
- `asgi_client`: Starlette's TestClient, and the API served in-process over a `Runtime`.
- `walking_skeleton`: what the sample process promises, checked in several tiers.
- `engine_scenarios`, `engine_harness`, `agent_doubles`: engines, processes and agents.
- `tail_clients`, `tail_workload`: WebSocket/SSE clients of the tail, events to tail.
- `private_postgres`, `raw_metrics`, `fuzz_hooks`: one test's heavier machinery.
"""
