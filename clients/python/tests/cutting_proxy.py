"""A WebSocket proxy that forwards a tail a few messages at a time, then ends the client's
connection in one of the ways a real one ends: 4408, 1012, 4401, 4429, or a dropped socket."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

ENDINGS = (4408, "drop", 1012, 4401, 4429)


class CuttingProxy:
    """Forwards `per_connection` messages of each connection, then cuts it."""

    def __init__(self, upstream_ws: str, per_connection: int = 3):
        self.upstream_ws = upstream_ws
        self.per_connection = per_connection
        self.endings = itertools.cycle(ENDINGS)
        self.cuts: list[int | str] = []
        self.paths: list[str] = []
        self.url = ""

    async def handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        self.paths.append(request.path)
        headers = {"Authorization": request.headers["Authorization"]}
        upstream = self.upstream_ws + request.path
        # max_queue=None: a proxy that leaves a catch-up unread closes at once (see the README)
        async with connect(upstream, additional_headers=headers, max_queue=None) as up:
            forward = asyncio.create_task(self.forward(up, connection))
            gone = asyncio.create_task(connection.wait_closed())
            await asyncio.wait({forward, gone}, return_when=asyncio.FIRST_COMPLETED)
            gone.cancel()
            if not forward.done():  # the client left first: nothing to cut
                forward.cancel()
                return
        ending = next(self.endings)
        self.cuts.append(ending)
        if ending == "drop":
            connection.transport.abort()
        else:
            assert isinstance(ending, int)
            await connection.close(ending, "resume with after=…")

    async def forward(self, up: ClientConnection, down: ServerConnection) -> None:
        for _ in range(self.per_connection):
            await down.send(await up.recv())

    @contextmanager
    def running(self) -> Iterator[CuttingProxy]:
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        stop = asyncio.Event()

        async def main() -> None:
            async with serve(self.handle, "127.0.0.1", 0) as server:
                port = next(iter(server.sockets)).getsockname()[1]
                self.url = f"http://127.0.0.1:{port}"
                ready.set()
                await stop.wait()

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        thread.start()
        assert ready.wait(10), "the proxy did not start"
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(10)
            loop.close()
