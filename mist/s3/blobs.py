"""Object data on local disk: blob files named by opaque ids, never by keys.

    DATA/s3/tmp/<id>            being written (an upload in progress)
    DATA/s3/blobs/<id[:2]>/<id> complete and fsync'd; visible only once a metadata row points at it

A key never becomes a path, so no key (`..`, `/`, NUL, 1024 bytes of anything) can reach
outside the data dir. The life of a blob, and what a crash at each step leaves:

    1. `BlobStore.writer()` records the id in s3_pending_blobs (committed) and opens tmp/<id>
    2. the body is written; `BlobWriter.finish()` fsyncs it, renames it into blobs/, fsyncs the dir
    3. the caller's metadata transaction points a row at the id and deletes its pending row
    4. a blob a transaction stopped pointing at (overwritten, deleted) is made pending in that
       same transaction, then unlinked after it commits (its pending row goes later, in bulk)

A crash before 3 commits leaves a pending row: on start `recover()` unlinks every pending blob
and empties tmp/, so an interrupted upload never becomes visible and leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

import sqlalchemy as sa

from mist.s3 import db as tables
from mist.s3.db import Database

WRITE_BUFFER = 1 << 20
_DELETE_PENDING = tables.pending_blobs.delete().where(
    tables.pending_blobs.c.blob_id.in_(sa.bindparam("ids", expanding=True))
)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class BlobWriter:
    """One blob being written. Not thread-safe: one writer, one thread at a time."""

    def __init__(self, store: BlobStore, blob_id: str) -> None:
        self._store = store
        self.blob_id = blob_id
        self.size = 0
        self._path = store.tmp_dir / blob_id
        self._file = open(self._path, "xb", buffering=0)  # noqa: SIM115 - closed by finish/abort
        self.finished = False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = self._file.write(view)
            view = view[n:]
        self.size += len(data)

    def copy_from(self, src: int, offset: int, count: int) -> None:
        """Append `count` bytes of the open file `src` from `offset`, in the kernel where it can."""
        dst = self._file.fileno()
        while count:
            try:
                n = os.copy_file_range(src, dst, count, offset)
            except OSError:
                n = 0
            if n == 0:  # not supported here, or a short source: fall back to read/write
                data = os.pread(src, min(count, WRITE_BUFFER), offset)
                if not data:
                    raise OSError(f"the source blob ended {count} bytes early")
                self.write(data)
                n = len(data)
            else:
                self.size += n
            offset += n
            count -= n

    def finish(self) -> str:
        """Make the data durable and move it into place (still invisible); return the blob id."""
        os.fsync(self._file.fileno())
        self._file.close()
        final = self._store.path(self.blob_id)
        final.parent.mkdir(exist_ok=True)
        os.rename(self._path, final)
        _fsync_dir(final.parent)
        self.finished = True
        return self.blob_id

    def abort(self) -> None:
        """Throw the data away (the upload failed or was cut off)."""
        if not self._file.closed:
            self._file.close()
        self._path.unlink(missing_ok=True)
        if self.finished:
            self._store.path(self.blob_id).unlink(missing_ok=True)
        self._store.settled([self.blob_id])


class BlobStore:
    def __init__(self, root: Path, db: Database, clock: Callable[[], float]) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self.blob_dir = root / "blobs"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.blob_dir.mkdir(exist_ok=True)
        self._db = db
        self._clock = clock
        self._lock = threading.Lock()
        self._settled: list[str] = []  # unlinked blobs whose pending rows can go

    def path(self, blob_id: str) -> Path:
        return self.blob_dir / blob_id[:2] / blob_id

    def writer(self) -> BlobWriter:
        blob_id = uuid.uuid4().hex

        def record(conn: sa.Connection) -> None:
            self._drop_settled(conn)
            conn.execute(tables.pending_blobs.insert(), {"blob_id": blob_id, "created_at": self._clock()})

        self._db.transact(record)
        return BlobWriter(self, blob_id)

    def commit(self, conn: sa.Connection, new: Iterable[str], dead: Iterable[str]) -> None:
        """Inside the metadata transaction: `new` blobs become referenced, `dead` ones pending."""
        new, dead = list(new), list(dead)
        if new:
            conn.execute(_DELETE_PENDING, {"ids": new})
        if dead:
            now = self._clock()
            conn.execute(tables.pending_blobs.insert(), [{"blob_id": b, "created_at": now} for b in dead])
        self._drop_settled(conn)

    def unlink(self, blob_ids: Iterable[str]) -> None:
        """After the transaction that made them dead committed: remove the files."""
        ids = list(blob_ids)
        for blob_id in ids:
            self.path(blob_id).unlink(missing_ok=True)
        self.settled(ids)

    def settled(self, blob_ids: list[str]) -> None:
        with self._lock:
            self._settled.extend(blob_ids)

    def _drop_settled(self, conn: sa.Connection) -> None:
        with self._lock:
            done, self._settled = self._settled, []
        for start in range(0, len(done), 500):
            conn.execute(_DELETE_PENDING, {"ids": done[start : start + 500]})

    def flush(self) -> None:
        with self._db.write() as conn:
            self._drop_settled(conn)

    def recover(self) -> int:
        """On start: unlink every pending blob and empty tmp/. Returns how many blobs went."""
        with self._db.write() as conn:
            pending = list(conn.execute(sa.select(tables.pending_blobs.c.blob_id)).scalars())
            for blob_id in pending:
                self.path(blob_id).unlink(missing_ok=True)
            conn.execute(tables.pending_blobs.delete())
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(exist_ok=True)
        return len(pending)


class SegmentReader:
    """Reads bytes [start, end] of an object made of blob segments (one, or one per part).

    The first `OPEN_AHEAD` blobs are opened at once, so a reader that started keeps reading the
    data it started with even if the object is overwritten or deleted meanwhile (POSIX keeps an
    unlinked file's data while it is open); a very long multipart object's later parts are opened
    as they are reached. Opening raises FileNotFoundError if the object changed since it was
    looked up; the caller looks it up again."""

    OPEN_AHEAD = 64

    def __init__(self, blobs: BlobStore, segments: list[tuple[str, int]], start: int, end: int) -> None:
        self._blobs = blobs
        self._plan: list[tuple[str, int, int]] = []  # (blob id, offset in blob, length)
        pos = 0
        for blob_id, size in segments:
            lo, hi = max(start, pos), min(end + 1, pos + size)
            if lo < hi:
                self._plan.append((blob_id, lo - pos, hi - lo))
            pos += size
        self._left = sum(length for _, _, length in self._plan)
        self._fds: dict[int, int] = {}
        self._index = 0
        self._done_in_segment = 0
        try:
            for i in range(min(len(self._plan), self.OPEN_AHEAD)):
                self._open(i)
        except BaseException:
            self.close()
            raise

    def _open(self, i: int) -> int:
        fd = self._fds.get(i)
        if fd is None:
            fd = self._fds[i] = os.open(self._blobs.path(self._plan[i][0]), os.O_RDONLY)
        return fd

    def read(self, n: int) -> bytes:
        """Up to n bytes; b"" at the end."""
        while self._index < len(self._plan):
            _, offset, length = self._plan[self._index]
            left = length - self._done_in_segment
            if left == 0:
                self._next_segment()
                continue
            data = os.pread(self._open(self._index), min(n, left), offset + self._done_in_segment)
            if not data:
                raise OSError(f"blob {self._plan[self._index][0]} is shorter than its metadata says")
            self._done_in_segment += len(data)
            self._left -= len(data)
            return data
        return b""

    def more(self) -> bool:
        """Whether bytes are left to read."""
        return self._left > 0

    def copy_to(self, writer: BlobWriter) -> None:
        """Append everything left to a blob being written, in the kernel where it can."""
        while self._index < len(self._plan):
            _, offset, length = self._plan[self._index]
            left = length - self._done_in_segment
            writer.copy_from(self._open(self._index), offset + self._done_in_segment, left)
            self._left -= left
            self._next_segment()

    def _next_segment(self) -> None:
        fd = self._fds.pop(self._index, None)
        if fd is not None:
            os.close(fd)
        self._index += 1
        self._done_in_segment = 0

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
