"""InvocationLog: records and log lines of invocations, written in batches, followed live.

The request path must not wait on the database, so `add()` only buffers; a background task
writes the buffer every `flush_interval` seconds in one transaction (off the event loop; on
the process's database writer thread when given one, so it never waits on the event queue's
writes for SQLite's lock).
Reads see buffered records too, so `GET /v1/invocations/{id}` works the moment the invocation
answered. `stop()` writes what is left. A crash of the whole process can lose at most the last
`flush_interval` of records (the metering issue will make usage durable before the answer).

Log lines are also fanned out to live followers (`mist logs --follow`) as invocations finish.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from mist.control.batching import SerialWriter
from mist.control.store import RecordStore
from mist.models import InvocationRecord, LogRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InvocationLogStats:
    pending: int
    written: int
    followers: int
    write_failures: int


class InvocationLog:
    def __init__(
        self,
        store: RecordStore,
        *,
        flush_interval: float = 0.05,
        max_batch: int = 2000,
        writer: SerialWriter | None = None,
    ) -> None:
        self._store = store
        self._writer = writer
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._pending: dict[str, tuple[InvocationRecord, list[LogRecord]]] = {}
        self._followers: dict[str, set[asyncio.Queue[LogRecord]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._written = 0
        self._failures = 0
        self._closing = False

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="invocation-log-writer")

    async def stop(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        await self._flush()

    def add(self, record: InvocationRecord, logs: list[LogRecord]) -> None:
        self._pending[record.id] = (record, logs)
        for q in self._followers.get(record.function, ()):
            for line in logs:
                try:
                    q.put_nowait(line)
                except asyncio.QueueFull:  # a follower that stopped reading misses lines
                    break
        n = len(self._pending)
        if n == 1 or n >= self._max_batch:  # the writer sleeps until there is something to write
            self._wake.set()

    async def get(self, invocation_id: str) -> tuple[InvocationRecord, list[LogRecord]] | None:
        found = self._pending.get(invocation_id)
        if found is not None:
            return found
        return await asyncio.to_thread(self._store.get_invocation, invocation_id)

    async def list(self, function: str, limit: int) -> list[InvocationRecord]:
        stored = await asyncio.to_thread(self._store.list_invocations, function, limit)
        pending = [r for r, _ in self._pending.values() if r.function == function]
        merged = {r.id: r for r in stored} | {r.id: r for r in pending}
        return sorted(merged.values(), key=lambda r: r.started_at, reverse=True)[:limit]

    async def logs(self, function: str, *, invocation_id: str | None, limit: int) -> list[LogRecord]:
        await self._flush()  # so history and the live tail meet without a gap or a repeat
        return await asyncio.to_thread(
            self._store.list_logs, function, invocation_id=invocation_id, limit=limit
        )

    def follow(self, function: str) -> asyncio.Queue[LogRecord]:
        q: asyncio.Queue[LogRecord] = asyncio.Queue(maxsize=10_000)
        self._followers.setdefault(function, set()).add(q)
        return q

    def unfollow(self, function: str, q: asyncio.Queue[LogRecord]) -> None:
        self._followers.get(function, set()).discard(q)

    def statistics(self) -> InvocationLogStats:
        return InvocationLogStats(
            pending=len(self._pending),
            written=self._written,
            followers=sum(len(s) for s in self._followers.values()),
            write_failures=self._failures,
        )

    async def _run(self) -> None:
        """Write what is pending every `flush_interval`, or at once when a batch is full; with
        nothing pending, sleep until `add` (an idle server does not wake 20 times a second)."""
        while not self._closing:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            self._wake.clear()
            if len(self._pending) < self._max_batch:
                try:
                    await asyncio.wait_for(self._wake.wait(), self._flush_interval)
                except TimeoutError:
                    pass
            await self._flush()

    async def _flush(self) -> None:
        if not self._pending:
            return
        batch = list(self._pending.values())
        try:
            if self._writer is not None:
                await self._writer.run(self._store.add_invocations, batch)
            else:
                await asyncio.to_thread(self._store.add_invocations, batch)
        except Exception:  # keep the records; the next flush tries again
            self._failures += 1
            log.exception("writing %d invocation records failed; will retry", len(batch))
            return
        for rec, _ in batch:
            # a record re-added meanwhile (same id) stays pending only if it changed
            if self._pending.get(rec.id, (None,))[0] is rec:
                del self._pending[rec.id]
        self._written += len(batch)
