"""The HTTP API: FastAPI app, routes, problem+json, the input boundary, the live tail.

The outermost room with the CLI: may import anything in `infrastructure` but the CLI.
"""
