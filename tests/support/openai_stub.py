"""An OpenAI-compatible model server for tests: real HTTP, the real SSE chunk format.

`POST /v1/chat/completions` with `stream: true` answers with the replies a test queued for
the requested model, in order (`stub.queue("m", Reply(...), ...)`); when none is queued it
answers `Reply(text="ok")`. A reply streams its reasoning and text in small pieces, tool
calls with their arguments split across chunks, and `usage` in a last chunk without
choices; it can instead answer an HTTP error (429, 500, …), stop after some chunks without
ending the response properly (a cut stream), or pause after some chunks until released.
Every request body and its headers are kept in `stub.requests`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.support.server import free_port


@dataclass
class Reply:
    """What the stub answers to one request."""

    text: str = ""
    reasoning: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200
    error_body: dict[str, Any] | None = None
    piece: int = 3
    """Characters of text (and of tool-call arguments) per chunk."""
    delay: float = 0.0
    """Seconds between chunks (a slow model)."""
    cut_after: int | None = None
    """Drop the connection after this many chunks, without ending the response."""
    pause_after: int | None = None
    """After this many chunks, wait until `stub.release()` (the stub says it is paused)."""
    prompt_tokens: int = 11
    completion_tokens: int | None = None
    """Default: one per text piece."""
    usage: bool = True
    finish: bool = True
    """Send a `finish_reason` (a stream without one was cut short by its server)."""
    model: str | None = None


@dataclass
class Seen:
    """One request the stub received."""

    body: dict[str, Any]
    headers: dict[str, str]


class OpenAiStub:
    """Run with `with OpenAiStub.running() as stub:`; point providers at `stub.base_url`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.requests: list[Seen] = []
        self.paused = threading.Event()
        self.finished_streams = 0
        self.abandoned = 0
        """Paused replies whose client went away before `release()` (a cancelled stream)."""
        self._released = threading.Event()
        self._script: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="openai-stub", daemon=True)

    @classmethod
    @contextmanager
    def running(cls) -> Iterator[OpenAiStub]:
        stub = cls()
        stub._thread.start()
        assert stub._ready.wait(10), "the OpenAI stub did not start"
        try:
            yield stub
        finally:
            stub.release()
            stub.stop()

    def queue(self, model: str, *replies: Reply) -> None:
        with self._lock:
            self._script.setdefault(model, []).extend(replies)

    def release(self) -> None:
        """Let a paused reply go on."""
        self._released.set()

    def bodies(self, model: str | None = None) -> list[dict[str, Any]]:
        return [s.body for s in self.requests if model is None or s.body.get("model") == model]

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _held(self, request: web.Request) -> bool:
        """Wait for `release()`; False when the client closed the connection first."""
        while not self._released.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                return False
            await asyncio.sleep(0.01)  # the stub's own poll: it has no other signal
        return True

    def _next(self, model: str) -> Reply:
        with self._lock:
            replies = self._script.get(model) or []
            return replies.pop(0) if replies else Reply(text="ok")

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        loop.run_until_complete(site.start())
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Seen(body, dict(request.headers)))
        model = body.get("model", "")
        reply = self._next(model)
        if reply.status != 200:
            error = reply.error_body or {"error": {"message": f"stub says {reply.status}"}}
            return web.json_response(error, status=reply.status)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunks = list(_chunks(reply, reply.model or model, bool(body.get("stream_options"))))
        for number, chunk in enumerate(chunks):
            if reply.cut_after is not None and number == reply.cut_after:
                assert request.transport is not None
                request.transport.abort()  # no terminating chunk: the client sees a cut
                return response
            if reply.pause_after is not None and number == reply.pause_after:
                self.paused.set()
                if not await self._held(request):
                    self.abandoned += 1
                    return response
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if reply.delay:
                await asyncio.sleep(reply.delay)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self.finished_streams += 1
        return response


def _chunks(reply: Reply, model: str, with_usage: bool) -> Iterator[dict[str, Any]]:
    ident, created = f"chatcmpl-{time.monotonic_ns()}", int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    yield chunk({"role": "assistant", "content": ""})
    for piece in _pieces(reply.reasoning, reply.piece):
        yield chunk({"reasoning_content": piece})
    pieces = _pieces(reply.text, reply.piece)
    for piece in pieces:
        yield chunk({"content": piece})
    for index, (name, arguments) in enumerate(reply.tool_calls):
        call_id = f"call_{index}_{name}"
        yield chunk(
            {
                "tool_calls": [
                    {
                        "index": index,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                ]
            }
        )
        for part in _pieces(json.dumps(arguments), reply.piece):
            yield chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]})
    if reply.finish:
        yield chunk({}, "tool_calls" if reply.tool_calls else "stop")
    if with_usage and reply.usage:
        completion = reply.completion_tokens
        yield {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": len(pieces) if completion is None else completion,
                "total_tokens": reply.prompt_tokens
                + (len(pieces) if completion is None else completion),
            },
        }


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]
