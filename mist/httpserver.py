"""HttpServer: uvicorn's Server, awake once a second while idle instead of ten times.

uvicorn's `Server.main_loop` sleeps 0.1 s between ticks, to refresh the `date` header once a
second and to notice `should_exit`. On an idle `mist up` those ten wake-ups a second per server
(the gateway and the S3 endpoint) were most of what it still did (docs/benchmarks.md, "Idle"),
each 0.15-0.4 ms of cold code on the benchmark machine. Here the loop ticks once a second, the
date header as fresh as before, and setting `should_exit` (a signal, `stop()`, another thread)
wakes it at once, so a stop is as prompt as it was.

`signals=False`: the server leaves the process's signals alone (whoever runs it stops it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

import uvicorn

TICK_S = 1.0


class HttpServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, signals: bool = True) -> None:
        self._exit_loop: asyncio.AbstractEventLoop | None = None
        self._exit_event: asyncio.Event | None = None
        self._signals = signals
        super().__init__(config)

    @property  # type: ignore[override]
    def should_exit(self) -> bool:
        return self._should_exit

    @should_exit.setter
    def should_exit(self, value: bool) -> None:
        self._should_exit = value
        loop, event = self._exit_loop, self._exit_event
        if value and loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)  # safe from a signal handler or another thread

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if self._signals:
            with super().capture_signals():
                yield
        else:
            yield

    async def main_loop(self) -> None:
        self._exit_loop = asyncio.get_running_loop()
        self._exit_event = asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 10) % 864000  # uvicorn's counter in 0.1 s: each tick refreshes the date
            if not self._should_exit:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(TICK_S):
                        await self._exit_event.wait()
            should_exit = await self.on_tick(counter)
