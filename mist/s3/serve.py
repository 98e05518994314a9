"""Serving the S3 app with uvicorn on its own socket, next to the main HTTP server.

    sock = socket.create_server(("127.0.0.1", 9000))  # bind first: a busy port fails at once
    server = S3Server(store, sock)
    await server.start()                            # returns once it accepts connections
    print(f"S3 endpoint at {server.url}")
    ...
    await server.stop()                             # finishes in-flight requests (5 s at most)

The S3 server leaves signals alone: whoever runs it (mist up) stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn

from mist.errors import PlatformError
from mist.s3.app import S3Statistics, build_s3_app
from mist.s3.store import ObjectStore


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the process's owner handles signals and calls stop()


class S3Server:
    def __init__(self, store: ObjectStore, sock: socket.socket) -> None:
        self.sock = sock
        # Accepted connections inherit this; asyncio sets it itself only on sockets made with
        # IPPROTO_TCP, and without it every answer waits ~40 ms on a delayed ACK (Nagle).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host, port = sock.getsockname()[:2]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        self.app = build_s3_app(store)
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            http="httptools",
            proxy_headers=False,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    def statistics(self) -> S3Statistics:
        return self.app.statistics()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self.sock]))
        while not self._server.started and not self._task.done():
            await asyncio.sleep(0.01)
        if self._task.done():
            self._task.result()  # raises what stopped it
            raise PlatformError("the S3 server stopped as soon as it started")

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task


async def serve_s3(store: ObjectStore, host: str = "127.0.0.1", port: int = 9000, *, sock: socket.socket | None = None) -> None:
    """Serve until cancelled (a standalone S3 endpoint)."""
    server = S3Server(store, sock or socket.create_server((host, port)))
    await server.start()
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()
