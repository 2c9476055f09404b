"""An HTTP agent for tests that a test switches: unavailable (503) while `down` is set, its
answers held back while `gate` is clear; it remembers the inputs it was asked about."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOLD_SECONDS = 20  # the longest the agent holds an answer back


class SwitchableAgent:
    """Answers `{"output": {<output_key>: <the step's input>}}` when up."""

    def __init__(self, output_key: str = "got") -> None:
        self.down = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.inputs: list[Any] = []
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                agent.inputs.append(body["input"])
                agent.gate.wait(HOLD_SECONDS)
                answer: dict[str, Any]
                if agent.down.is_set():
                    status, answer = 503, {"error": "down for maintenance"}
                else:
                    status, answer = 200, {"output": {output_key: body["input"]}}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/agent"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.gate.set()
        self.http.shutdown()
        self.http.server_close()


@contextmanager
def switchable_agent(output_key: str = "got") -> Iterator[SwitchableAgent]:
    agent = SwitchableAgent(output_key)
    try:
        yield agent
    finally:
        agent.close()
