"""The usage journal: append-only segment files, so a usage record is on disk before the
invocation's answer is sent, for the cost of one write(2), not of a database transaction.

    journal = Journal(data_dir / "usage-journal", fsync=False)
    leftovers = journal.recover()          # segments a previous run left: [(path, records)]
    journal.open()                         # a new segment for this run
    ticket = journal.append(record)        # written: from now on a kill of mist cannot lose it
    await journal.sync(ticket)             # fdatasync'd too (only with fsync=True): a power cut neither
    old = journal.rotate()                 # later appends go to a new segment...
    await journal.retire(old)              # ...and the old one is deleted once imported

`append` writes the record's line at once with one write(2) (microseconds, on the event loop:
the kernel has it from then on, whatever happens to mist). With `fsync=True`, `sync` waits for
an fdatasync of the segment, group committed: it runs in a thread, and callers arriving while
one runs are served by the next, so N concurrent invocations cost one fdatasync and a lone one
is not delayed by any timer. Without it, what a power cut (not a crash of mist) can lose is
bounded by the ledger's import interval (the import commits with a database fsync).

Format: one line per record, `CRC32 JSON\n` (the CRC of the JSON, 8 hex digits). A line cut by
a power cut, or damaged, fails its check and is skipped on recovery; nothing after it is lost
(each line stands alone). After a failed write (a full disk) a segment is written no more; its
records stay in memory for the import.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from mist.metering.usage import UsageRecord

log = logging.getLogger(__name__)
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def encode(record: UsageRecord) -> bytes:
    body = _encode_json(record).encode()  # a NamedTuple: its fields, in order, as a JSON list
    return b"%08x %s\n" % (zlib.crc32(body), body)


def decode(line: bytes) -> UsageRecord | None:
    """The record of a journal line, or None if the line is damaged."""
    crc, _, body = line.rstrip(b"\n").partition(b" ")
    try:
        if int(crc, 16) != zlib.crc32(body):
            return None
        return UsageRecord(*json.loads(body))
    except (ValueError, TypeError):
        return None


class Segment:
    """One journal file of this run."""

    def __init__(self, path: Path, pool: ThreadPoolExecutor, counts: dict[str, int]) -> None:
        self.path = path
        self.records: list[UsageRecord] = []  # every record appended, for the import
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._pool = pool
        self._counts = counts
        self._broken = False  # a write failed: a torn line may end the file, write no more
        self._synced = 0  # records fdatasync'd
        self._syncing: asyncio.Future[None] | None = None

    def append(self, record: UsageRecord) -> int:
        """Write the record's line; its ticket. OSError if the write failed (the record is kept
        for the import all the same)."""
        self.records.append(record)
        if self._fd < 0 or self._broken:
            return len(self.records)
        data = encode(record)
        try:
            while data:  # a regular file takes it all unless the disk is full (OSError)
                data = data[os.write(self._fd, data) :]
        except OSError:
            self._broken = True
            raise
        return len(self.records)

    async def sync(self, upto: int) -> None:
        """Until the first `upto` records are fdatasync'd. A closed segment's records are stored
        elsewhere already (segments are closed once imported, or written out)."""
        while self._synced < upto and self._fd >= 0 and not self._broken:
            if self._syncing is None:
                self._syncing = asyncio.ensure_future(self._sync())
            await asyncio.shield(self._syncing)

    async def _sync(self) -> None:
        try:
            upto = len(self.records)
            await asyncio.get_running_loop().run_in_executor(self._pool, os.fdatasync, self._fd)
            self._synced = upto
            self._counts["syncs"] += 1
        finally:
            self._syncing = None

    async def close(self) -> None:
        while self._syncing is not None:  # an fdatasync in flight must not find its fd closed
            await asyncio.gather(asyncio.shield(self._syncing), return_exceptions=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1  # never written again (its number may be reused by another file)


class Journal:
    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self.directory = directory
        self.fsync = fsync
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mist-usage-journal")
        self._current: Segment | None = None
        self._next = 1
        self.counts = {"syncs": 0}  # group-committed fdatasyncs

    def recover(self) -> list[tuple[Path, list[UsageRecord]]]:
        """The segments left by earlier runs, oldest first, with their readable records."""
        self.directory.mkdir(parents=True, exist_ok=True)
        found = sorted(self.directory.glob("*.log"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
        out: list[tuple[Path, list[UsageRecord]]] = []
        for path in found:
            records, damaged = [], 0
            with open(path, "rb") as f:
                for line in f:
                    rec = decode(line)
                    if rec is None:
                        damaged += 1
                    else:
                        records.append(rec)
            if damaged:
                log.warning("usage journal %s: %d damaged line(s) skipped (a write cut by a power cut)", path, damaged)
            out.append((path, records))
            if path.stem.isdigit():
                self._next = max(self._next, int(path.stem) + 1)
        return out

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._current = Segment(self.directory / f"{self._next:012d}.log", self._pool, self.counts)
        self._next += 1

    def append(self, record: UsageRecord) -> tuple[Segment, int]:
        seg = self._current
        assert seg is not None, "Journal.open() first"
        return seg, seg.append(record)

    @property
    def current_records(self) -> int:
        return len(self._current.records) if self._current is not None else 0

    async def sync(self, ticket: tuple[Segment, int]) -> None:
        """With fsync: until the ticket's record is fdatasync'd (group commit). Else at once."""
        if self.fsync:
            seg, upto = ticket
            await seg.sync(upto)

    def rotate(self) -> Segment | None:
        """Start a new segment if the current one holds records; the old one, or None."""
        old = self._current
        if old is None or not old.records:
            return None
        self.open()
        return old

    async def retire(self, segment: Segment) -> None:
        """Close and delete a segment whose records are stored elsewhere."""
        await segment.close()
        segment.path.unlink(missing_ok=True)

    async def close(self) -> None:
        """Close the current segment: deleted if empty, else synced and kept for the next run."""
        seg, self._current = self._current, None
        if seg is not None:
            if seg.records:
                await seg.sync(len(seg.records))
            await seg.close()
            if not seg.records:
                seg.path.unlink(missing_ok=True)
        self._pool.shutdown(wait=True)
