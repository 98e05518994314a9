"""Database writes off the event loop: one writer thread, and group commit on top of it.

`SerialWriter.run(fn, ...)` runs a blocking store call on the writer's one thread, so the
event queue's writes never wait on each other's locks (SQLite has one writer at a time anyway).
`GroupCommit.submit(item)` hands one item to a batch write: items submitted while a batch is
being written go together into the next one, so N concurrent callers cost one transaction (one
fsync) instead of N, and a lone caller is not delayed by any timer.

    writer = SerialWriter()
    enqueue = GroupCommit(lambda batch: store.enqueue(batch, time.time()), writer)
    result = await enqueue.submit(event)     # returns once its batch is committed
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class SerialWriter:
    def __init__(self, name: str = "mist-db-writer") -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    async def run(self, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class GroupCommit(Generic[T, R]):
    """`write(items) -> results` (one result per item, in order) in batches of at most `max_batch`."""

    def __init__(
        self, write: Callable[[Sequence[T]], Sequence[R]], writer: SerialWriter, *, max_batch: int = 1000
    ) -> None:
        self._write = write
        self._writer = writer
        self._max_batch = max_batch
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._draining: asyncio.Task[None] | None = None
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, fut))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while self._waiting:
            batch = self._waiting[: self._max_batch]
            del self._waiting[: self._max_batch]
            try:
                results = await self._writer.run(self._write, [item for item, _ in batch])
            except Exception as exc:  # every caller of the batch learns it failed
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(batch)
            for (_, fut), result in zip(batch, results):
                if not fut.done():
                    fut.set_result(result)
