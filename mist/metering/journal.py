"""The usage journal: append-only segment files, so a usage record is on disk before the
invocation's answer is sent, at the cost of a group commit rather than a database transaction.

    journal = Journal(data_dir / "usage-journal")
    leftovers = journal.recover()          # segments a previous run left: [(path, records)]
    journal.open()                         # a new segment for this run
    ticket = journal.append(record)        # buffered in memory
    await journal.durable(ticket)          # write(2) + fdatasync of every record buffered so far
    old = journal.rotate()                 # later appends go to a new segment...
    await journal.retire(old)              # ...and the old one is deleted once imported

Group commit: `durable` writes the segment's whole buffer in one write(2) on the event loop
(microseconds; from then on a kill of mist cannot lose it, the kernel has it) and then runs
one fdatasync in a thread (survives a power cut too). Callers arriving while an fdatasync runs
are served by the next one, so N concurrent invocations cost one fdatasync, and a lone one is
not delayed by any timer. With `fsync=False` only the write(2) is waited for.

Format: one line per record, `CRC32 JSON\\n` (the CRC of the JSON, 8 hex digits). A line cut by
a power cut, or damaged, fails its check and is skipped on recovery; nothing after it is lost
(each line stands alone).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple
from pathlib import Path

from mist.metering.usage import UsageRecord

log = logging.getLogger(__name__)
_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def encode(record: UsageRecord) -> bytes:
    body = _encode_json(astuple(record)).encode()
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

    def __init__(self, path: Path, pool: ThreadPoolExecutor, fsync: bool, counts: dict[str, int]) -> None:
        self.path = path
        self.records: list[UsageRecord] = []  # every record appended, for the import
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._pool = pool
        self._fsync = fsync
        self._buffer: list[bytes] = []
        self._durable = 0  # records written (and synced)
        self._flushing: asyncio.Future[None] | None = None
        self._counts = counts

    def append(self, record: UsageRecord) -> int:
        self.records.append(record)
        self._buffer.append(encode(record))
        return len(self.records)

    async def durable(self, upto: int) -> None:
        """Until the first `upto` records are written (and synced). A closed segment's records
        are stored elsewhere already (segments are closed once imported, or written out)."""
        while self._durable < upto and self._fd >= 0:
            if self._flushing is None:
                self._flushing = asyncio.ensure_future(self._flush())
            await asyncio.shield(self._flushing)

    async def _flush(self) -> None:
        try:
            upto = len(self.records)
            data = b"".join(self._buffer)
            self._buffer.clear()
            while data:  # a regular file takes it all unless the disk is full (OSError)
                data = data[os.write(self._fd, data) :]
            if self._fsync:
                await asyncio.get_running_loop().run_in_executor(self._pool, os.fdatasync, self._fd)
            self._durable = upto
            self._counts["flushes"] += 1
        finally:
            self._flushing = None

    async def close(self) -> None:
        while self._flushing is not None:  # an fdatasync in flight must not find its fd closed
            await asyncio.gather(asyncio.shield(self._flushing), return_exceptions=True)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1  # never written again (its number may be reused by another file)


class Journal:
    def __init__(self, directory: Path, *, fsync: bool = True) -> None:
        self.directory = directory
        self._fsync = fsync
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mist-usage-journal")
        self._current: Segment | None = None
        self._next = 1
        self.counts = {"flushes": 0}  # group commits

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
        self._current = Segment(self.directory / f"{self._next:012d}.log", self._pool, self._fsync, self.counts)
        self._next += 1

    def append(self, record: UsageRecord) -> tuple[Segment, int]:
        seg = self._current
        assert seg is not None, "Journal.open() first"
        return seg, seg.append(record)

    @property
    def current_records(self) -> int:
        return len(self._current.records) if self._current is not None else 0

    @staticmethod
    async def durable(ticket: tuple[Segment, int]) -> None:
        seg, upto = ticket
        await seg.durable(upto)

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
        """Close the current segment: deleted if empty, else written out for the next run."""
        seg, self._current = self._current, None
        if seg is not None:
            if seg.records:
                await seg.durable(len(seg.records))
            await seg.close()
            if not seg.records:
                seg.path.unlink(missing_ok=True)
        self._pool.shutdown(wait=True)
