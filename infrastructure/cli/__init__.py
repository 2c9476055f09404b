"""The `agent-ledger` command: one module per command group, `main` wires them.

The outermost room: may import anything in `infrastructure`.
"""
