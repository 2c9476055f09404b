"""The `agent-ledger` command: one module per command group, `main` wires them.

The entry point is `agent_ledger.infrastructure.cli:main` (`infrastructure.cli:main` before the
layers were installed under `agent_ledger`).

The outermost room: may import anything in `infrastructure`.
"""

from agent_ledger.infrastructure.cli.main import main

__all__ = ["main"]
