"""The `agent-ledger` command: one module per command group, `main` wires them.

The entry point is `infrastructure.cli:main` (a name that has not moved since the CLI was
one module, so `bench/ab.sh` can run revisions from before and after the split).

The outermost room: may import anything in `infrastructure`.
"""

from infrastructure.cli.main import main

__all__ = ["main"]
