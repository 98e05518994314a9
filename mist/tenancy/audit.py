"""AuditLog: who did what to which resource, when, from where — every control-plane write and
every refused request (401/403), written by the edge (mist/gateway/auth.py).

`note(entry)` only buffers (a flood of bad keys must not become a flood of transactions); a
background task writes the buffer every `flush_interval` seconds in one transaction on the
process's database writer thread. A control-plane write's entry is noted before its answer is
sent, so a crash can lose at most the last `flush_interval` of entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from mist.control.batching import SerialWriter
from mist.tenancy.model import AuditEntry
from mist.tenancy.store import AuditStore

log = logging.getLogger("mist.audit")

MAX_BUFFER = 100_000  # beyond this, entries are counted as dropped instead of growing memory


@dataclass(frozen=True)
class AuditLogStats:
    pending: int
    written: int
    dropped: int


class AuditLog:
    def __init__(self, store: AuditStore, writer: SerialWriter | None = None, *, flush_interval: float = 0.1) -> None:
        self._store = store
        self._writer = writer
        self._flush_interval = flush_interval
        self._pending: list[AuditEntry] = []
        self._task: asyncio.Task[None] | None = None
        self._written = 0
        self._dropped = 0
        self._wake = asyncio.Event()  # set by note() when the buffer stops being empty

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    def note(self, entry: AuditEntry) -> None:
        if len(self._pending) >= MAX_BUFFER:
            self._dropped += 1
            return
        self._pending.append(entry)
        if len(self._pending) == 1:
            self._wake.set()

    async def flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            if self._writer is not None:
                await self._writer.run(self._store.add_audit, batch)
            else:
                await asyncio.to_thread(self._store.add_audit, batch)
            self._written += len(batch)
        except Exception:  # noqa: BLE001 - keep them for the next try
            log.exception("could not write %d audit entries; will retry", len(batch))
            self._pending[:0] = batch

    async def query(self, *, tenant: str | None, since: float | None = None, until: float | None = None,
                    limit: int = 100) -> list[AuditEntry]:
        await self.flush()
        return await asyncio.to_thread(self._store.list_audit, tenant=tenant, since=since, until=until, limit=limit)

    async def _run(self) -> None:
        """Write the buffer `flush_interval` after its first entry; with nothing to write, sleep
        until note() (an idle server does not wake 10 times a second)."""
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
            await asyncio.sleep(self._flush_interval)
            await self.flush()

    def statistics(self) -> AuditLogStats:
        return AuditLogStats(len(self._pending), self._written, self._dropped)
