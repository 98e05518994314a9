"""Ledger: usage records in, on disk before the caller goes on, in the usage table soon after.

    ledger = Ledger(store, Journal(data_dir / "usage-journal"), writer)
    await ledger.start()              # segments left by a crash are imported first
    await ledger.append(record)       # in the journal (and msync'd, if the journal syncs)
    ledger.append_nowait(record)      # the same, the msync not waited for (provisioned spans)
    await ledger.flush()              # everything appended is in the usage table (reports)
    await ledger.totals(start, end)   # each tenant's usage: the table's plus the journal's not imported yet
    await ledger.stop()

Every `interval_s` the journal is rotated and the closed segment's records are stored in the
usage table in one durable transaction (idempotent by record id); only then is the segment
file deleted. A crash at any point leaves each record in a segment file, in the table, or
both; the next start imports every segment file it finds (what is in the table already is not
stored again), so nothing is lost and nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from mist.control.batching import SerialWriter
from mist.metering.journal import Journal, Segment
from mist.metering.store import UsageStore
from mist.core.pricing import Usage
from mist.metering.usage import UsageRecord, to_us

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LedgerStats:
    appended: int  # records appended by this run
    journal_syncs: int  # group-committed msyncs of the journal (only when it syncs)
    pending: int  # appended, not yet in the usage table
    imported: int  # records stored in the usage table by this run (repeats not counted)
    recovered: int  # records found in journal segments left by an earlier run
    journal_failures: int  # journal writes or syncs that failed (their records were still imported)
    import_failures: int  # imports the database refused (retried)


class Ledger:
    def __init__(self, store: UsageStore, journal: Journal, writer: SerialWriter, *, interval_s: float = 1.0) -> None:
        self._store = store
        self._journal = journal
        self._writer = writer
        self._interval_s = interval_s
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._kicks: set[asyncio.Task[None]] = set()
        self._counts = dict.fromkeys(("appended", "imported", "recovered", "journal_failures", "import_failures"), 0)

    async def start(self) -> None:
        for path, records in await asyncio.to_thread(self._journal.recover):
            await self._writer.run(self._store.add_usage, records)  # raises: mist does not start
            self._counts["recovered"] += len(records)
            path.unlink()
            if records:
                log.info("usage journal: %d record(s) of an earlier run imported from %s", len(records), path.name)
        self._journal.open()
        self._task = asyncio.create_task(self._run(), name="usage-ledger")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.gather(*self._kicks, return_exceptions=True)
        try:
            await self.flush()
        except Exception:  # the journal keeps them: the next start imports them
            log.exception("importing usage records at stop failed; they stay in the journal for the next start")
        await self._journal.close()

    async def append(self, record: UsageRecord) -> None:
        """Returns once the record is written in the journal (and msync'd, group committed,
        if the journal syncs). A failed write is logged and counted; the record still reaches
        the usage table with the next import."""
        ticket = self.write(record)
        if ticket is not None and self.syncs:
            await self.sync(ticket)

    def append_nowait(self, record: UsageRecord) -> None:
        """Written now; a journal that syncs does so in the background."""
        ticket = self.write(record)
        if ticket is not None and self.syncs:
            task = asyncio.ensure_future(self.sync(ticket))
            self._kicks.add(task)
            task.add_done_callback(self._kicks.discard)

    @property
    def syncs(self) -> bool:
        """Whether `sync` waits for the disk (else a written record is as safe as it gets)."""
        return self._journal.fsync

    async def sync(self, ticket: tuple[Segment, int]) -> None:
        try:
            await self._journal.sync(ticket)
        except OSError:
            self._failed()

    def write(self, record: UsageRecord) -> tuple[Segment, int] | None:
        """The record in the journal's file (the first half of `append`, without a coroutine:
        the invocation path calls it); its ticket for `sync`, or None if it could not be written."""
        self._counts["appended"] += 1
        try:
            return self._journal.append(record)
        except OSError:
            self._failed()
            return None

    def _failed(self) -> None:
        self._counts["journal_failures"] += 1
        log.exception("usage journal: writing failed; the record stays in memory until the next import")

    async def flush(self) -> None:
        """Rotate the journal and import every closed segment now."""
        async with self._lock:
            self._journal.rotate()
            for seg in list(self._journal.closed):
                try:
                    self._counts["imported"] += await self._writer.run(self._store.add_usage, seg.records)
                except Exception:
                    self._counts["import_failures"] += 1
                    raise
                await self._journal.retire(seg)

    async def totals(self, start: float, end: float) -> dict[str, Usage]:
        """Each tenant's usage that started in [start, end): the usage table's totals (every
        process's imported records) plus this process's records not imported yet. No import runs
        meanwhile, so each record is counted once, in the table or in the journal."""
        async with self._lock:
            stored = await asyncio.to_thread(self._store.tenant_totals, start, end)
            start_us, end_us = to_us(start), to_us(end)
            for r in self._journal.pending():
                if start_us <= r.started_us < end_us:
                    stored[r.tenant] = stored.get(r.tenant, Usage()) + r.usage()
        return stored

    def statistics(self) -> LedgerStats:
        c = self._counts
        pending = sum(len(s.records) for s in self._journal.closed) + self._journal.current_records
        return LedgerStats(c["appended"], self._journal.counts["syncs"], pending, c["imported"], c["recovered"],
                           c["journal_failures"], c["import_failures"])  # fmt: skip

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.flush()
            except Exception:  # the records stay in their segment: the next tick tries again
                log.exception("importing usage records into the database failed; will retry")
