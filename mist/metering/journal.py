"""The usage journal: append-only segment files, so a usage record is on disk before the
invocation's answer is sent, for the cost of a memory copy, not of a database transaction.

    journal = Journal(data_dir / "usage-journal", fsync=False)
    leftovers = journal.recover()          # segments a previous run left: [(path, records)]
    journal.open()                         # a new segment for this run
    ticket = journal.append(record)        # in the file: from now on a kill of mist cannot lose it
    await journal.sync(ticket)             # msync'd too (only with fsync=True): a power cut neither
    journal.rotate()                       # later appends go to a new segment...
    for seg in journal.closed: ...         # ...the closed ones are imported elsewhere, then
    await journal.retire(seg)              # deleted

A segment is a file of SEGMENT_BYTES, reserved on disk when it is opened (posix_fallocate: a
full disk is an error then, never a SIGBUS later) and mapped into memory (MAP_SHARED). `append`
copies the record's line into the mapping: the page cache holds it from then on, whatever
happens to mist, as after a write(2), but without a system call: a system call releases the
GIL, and on the event loop every release lets the other threads (the database writer) hold it
for up to the 5 ms switch interval. A segment that fills up is rotated at once.

With `fsync=True`, `sync` waits for an msync of the segment, group committed: it runs in a
thread, and callers arriving while one runs are served by the next, so N concurrent
invocations cost one msync and a lone one is not delayed by any timer. Without it, what a power
cut (not a crash of mist) can lose is bounded by the ledger's import interval (the import
commits with a database fsync).

Format: one line per record, `CRC32 JSON\\n` (the CRC of the JSON, 8 hex digits), then zeros to
the end of the file. A line cut by a kill in the middle of its copy, or by a power cut, fails its
check and is skipped on recovery; nothing after it is lost (each line stands alone).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import mmap
import os
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from json.encoder import encode_basestring_ascii
from pathlib import Path

from mist.metering.usage import UsageRecord

log = logging.getLogger(__name__)
_q = encode_basestring_ascii  # a str as a JSON string, quotes included (C)
SEGMENT_BYTES = 16 << 20  # ~70,000 records; rotated every import (1 s) or when full
PREPARE_BYTES = 256 << 10  # made writable ahead of the appends, in a thread (see Segment._prepare)
_MADV_POPULATE_WRITE = 23  # Linux 5.14; not in Python 3.11's mmap module
_libc = ctypes.CDLL(None, use_errno=True)


def _populate(address: int, length: int) -> None:
    """madvise(MADV_POPULATE_WRITE) through ctypes, which lets go of the GIL for the call (the
    mmap module's madvise holds it: up to milliseconds of the event loop). An older kernel says
    EINVAL: the appends then take the page faults themselves."""
    _libc.madvise(ctypes.c_void_p(address), ctypes.c_size_t(length), _MADV_POPULATE_WRITE)


def _unlink(path: Path) -> None:
    path.unlink(missing_ok=True)


def encode(r: UsageRecord) -> bytes:
    """The record's fields in order as a compact JSON list (what json.dumps gives, 3x faster: this
    runs on every invocation), after its CRC."""
    body = (f"[{_q(r[0])},{_q(r[1])},{_q(r[2])},{_q(r[3])},{r[4]},{_q(r[5])},{r[6]},{r[7]},{r[8]},{r[9]},"
            f"{r[10]},{r[11]},{r[12]},{'true' if r[13] else 'false'},{_q(r[14])},"
            f"{'null' if r[15] is None else _q(r[15])}]").encode()  # fmt: skip
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


class SegmentFull(Exception):
    pass


class Segment:
    """One journal file of this run, mapped into memory."""

    def __init__(self, path: Path, pool: ThreadPoolExecutor, counts: dict[str, int], size: int) -> None:
        self.path = path
        self.records: list[UsageRecord] = []  # every record appended, for the import
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            self._map: mmap.mmap | None = mmap.mmap(fd, size)
        finally:
            os.close(fd)  # the mapping keeps the file
        self._pos = 0
        self._pool = pool
        self._counts = counts
        self._synced = 0  # records msync'd
        self._syncing: asyncio.Future[None] | None = None
        self._prepared = 0  # bytes from the start made writable ahead (or being made so)
        self._preparing: Future[None] | None = None  # the latest of those jobs (one thread: in order)
        self._prepare_ahead()

    def _prepare_ahead(self) -> None:
        """Have the next PREPARE_BYTES of the file made writable in a thread, before appends
        reach them. The first write to a page of the (reserved, never written) file costs a page
        fault in which the file system allocates the page and marks its block written: 0.4 ms on
        an idle ext4 here, 2 ms under load, paid by the first invocation after every rotation
        (each second) and every 4 KB after, on the event loop, while its answer waits."""
        m = self._map
        if m is None or self._prepared >= len(m):
            return
        start, self._prepared = self._prepared, min(len(m), self._prepared + PREPARE_BYTES)
        view = (ctypes.c_char * len(m)).from_buffer(m)  # its address (the export ends with `view`)
        address = ctypes.addressof(view) + start
        del view
        try:
            self._preparing = self._pool.submit(_populate, address, self._prepared - start)
        except RuntimeError:  # the journal is closing
            pass

    def append(self, record: UsageRecord) -> int:
        """Copy the record's line into the file; its ticket. SegmentFull if it does not fit."""
        data = encode(record)
        end = self._pos + len(data)
        m = self._map
        if m is not None:
            if end > len(m):
                raise SegmentFull
            m[self._pos : end] = data
            self._pos = end
            if end > self._prepared - PREPARE_BYTES // 2:
                self._prepare_ahead()
        self.records.append(record)
        return len(self.records)

    async def sync(self, upto: int) -> None:
        """Until the first `upto` records are msync'd. A closed segment's records are stored
        elsewhere already (segments are closed once imported, or written out)."""
        while self._synced < upto and self._map is not None:
            if self._syncing is None:
                self._syncing = asyncio.ensure_future(self._sync())
            await asyncio.shield(self._syncing)

    async def _sync(self) -> None:
        try:
            upto = len(self.records)
            assert self._map is not None
            await asyncio.get_running_loop().run_in_executor(self._pool, self._map.flush)
            self._synced = upto
            self._counts["syncs"] += 1
        finally:
            self._syncing = None

    async def close(self) -> None:
        if self._preparing is not None:  # never unmap what a thread is still populating
            await asyncio.wrap_future(self._preparing)
        while self._syncing is not None:  # an msync in flight must not find its mapping closed
            await asyncio.gather(asyncio.shield(self._syncing), return_exceptions=True)
        if self._map is not None:
            self._map.close()
            self._map = None  # never written again


class Journal:
    def __init__(self, directory: Path, *, fsync: bool = False, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.fsync = fsync
        self.closed: list[Segment] = []  # rotated, oldest first, not yet retired
        self._segment_bytes = segment_bytes
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mist-usage-journal")
        self._current: Segment | None = None
        self._next = 1
        self.counts = {"syncs": 0}  # group-committed msyncs

    def recover(self) -> list[tuple[Path, list[UsageRecord]]]:
        """The segments left by earlier runs, oldest first, with their readable records."""
        self.directory.mkdir(parents=True, exist_ok=True)
        found = sorted(self.directory.glob("*.log"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
        out: list[tuple[Path, list[UsageRecord]]] = []
        for path in found:
            records, damaged = [], 0
            data = path.read_bytes()
            written = data[: data.find(b"\x00")] if b"\x00" in data else data  # a JSON line holds no NUL
            for line in written.splitlines():
                rec = decode(line)
                if rec is None:
                    damaged += 1
                else:
                    records.append(rec)
            if damaged:
                log.warning("usage journal %s: %d damaged line(s) skipped (cut by a kill or a power cut)", path, damaged)
            out.append((path, records))
            if path.stem.isdigit():
                self._next = max(self._next, int(path.stem) + 1)
        return out

    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{self._next:012d}.log"
        self._next += 1
        self._current = Segment(path, self._pool, self.counts, self._segment_bytes)

    def append(self, record: UsageRecord) -> tuple[Segment, int]:
        """In the file when this returns. OSError if a new segment cannot be made (a full disk)."""
        seg = self._current
        assert seg is not None, "Journal.open() first"
        try:
            return seg, seg.append(record)
        except SegmentFull:
            try:
                self.rotate()
            except OSError:
                seg.records.append(record)  # kept for the import (not crash-safe until then)
                raise
            seg = self._current
            assert seg is not None
            return seg, seg.append(record)

    @property
    def current_records(self) -> int:
        return len(self._current.records) if self._current is not None else 0

    def pending(self) -> list[UsageRecord]:
        """Every record appended and not yet retired: the closed segments' and the current one's."""
        segments = [*self.closed, *([self._current] if self._current is not None else [])]
        return [r for seg in segments for r in seg.records]

    async def sync(self, ticket: tuple[Segment, int]) -> None:
        """With fsync: until the ticket's record is msync'd (group commit). Else at once."""
        if self.fsync:
            seg, upto = ticket
            await seg.sync(upto)

    def rotate(self) -> None:
        """Close the current segment for appends (into `closed`) if it holds records, and open a
        new one."""
        old = self._current
        if old is None or not old.records:
            return
        self.open()  # an OSError (a full disk) leaves everything as it was
        self.closed.append(old)

    async def retire(self, segment: Segment) -> None:
        """Close and delete a closed segment whose records are stored elsewhere."""
        self.closed.remove(segment)
        await segment.close()
        # in the journal's thread: deleting a written 16 MB segment held the event loop ~1 ms
        # (py-spy, every rotation)
        await asyncio.get_running_loop().run_in_executor(self._pool, _unlink, segment.path)

    async def close(self) -> None:
        """Close every segment: those with records are synced and kept for the next run."""
        segments, self.closed = [*self.closed, *([self._current] if self._current else [])], []
        self._current = None
        for seg in segments:
            if seg.records:
                await seg.sync(len(seg.records))
            await seg.close()
            if not seg.records:
                seg.path.unlink(missing_ok=True)
        self._pool.shutdown(wait=True)
