"""ObjectStore: buckets and objects, data on local disk (blobs.py) and metadata in SQL (db.py).

Every method blocks (disk, database): the S3 app calls them in threads. Writes follow one shape:
the data is made durable first, invisible (`BlobStore.writer` ... `finish`), then one
transaction points the object's row at it, marks the blobs it replaced for deletion and writes
the outbox row (the bucket notification); only after that commit are replaced blobs unlinked
and the outbox's waiters woken. A failed request therefore changes nothing and emits nothing.

Every call names its `Caller`; a bucket belongs to the owner whose key created it, and only
that owner may use it (AccessDenied otherwise) or sees it in ListBuckets.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from mist.errors import Conflict, UserError
from mist.s3 import db as tables
from mist.s3 import events
from mist.s3.blobs import BlobStore, BlobWriter, SegmentReader
from mist.s3.db import Database
from mist.s3.keys import AccessKeys, sealing_box
from mist.s3.listing import Page, list_page, prefix_upper
from mist.s3.model import Bucket, Caller, ListEntry, ObjectInfo, ObjectMeta, no_such_bucket, no_such_key
from mist.s3.multipart import Uploads
from mist.s3.outbox import SqlOutbox, Wakeup
from mist.s3.rules import Precondition, validate_bucket_name, validate_key

RETRIES = 5  # an object changed between its lookup and opening its data is looked up again


# content(conn) -> (segments, metadata, blob ids no longer used): what an object commit makes
Content = Callable[[sa.Connection], tuple[list[tuple[str, int]], ObjectMeta, list[str]]]


def _row_to_info(row: Any) -> ObjectInfo:
    return ObjectInfo(
        bucket=row.bucket, key=row.key, size=row.size, etag=row.etag, last_modified=row.last_modified,
        meta=ObjectMeta.from_row(row.content_type, row.meta),
        segments=[(b, s) for b, s in json.loads(row.segments)],
    )  # fmt: skip


def _check_owner(row: Any, caller: Caller, bucket: str) -> None:
    if row is None:
        raise no_such_bucket(bucket)
    if row.owner != caller.owner:  # another tenant's bucket is invisible: as if it did not exist
        raise no_such_bucket(bucket)


# statements of the hot paths, built once (parameters bound at each execution)
_BUCKET = {
    lock: sa.select(tables.buckets).where(tables.buckets.c.name == sa.bindparam("name")).with_for_update(
        read=lock == "share") if lock else sa.select(tables.buckets).where(tables.buckets.c.name == sa.bindparam("name"))
    for lock in (None, "share", "update")
}  # fmt: skip
_THIS_OBJECT = (tables.objects.c.bucket == sa.bindparam("bucket")) & (tables.objects.c.key == sa.bindparam("key"))
_OBJECT_FOR_UPDATE = sa.select(tables.objects.c.segments, tables.objects.c.etag).where(_THIS_OBJECT).with_for_update()
_UPDATE_OBJECT = tables.objects.update().where(
    (tables.objects.c.bucket == sa.bindparam("b_bucket")) & (tables.objects.c.key == sa.bindparam("b_key"))
)

# the hot read, in one statement: the bucket's owner and the object (NULLs if there is none)
_GET_OBJECT = (
    sa.select(tables.buckets.c.owner, *(c for c in tables.objects.c if c.name != "bucket"),
              tables.buckets.c.name.label("bucket"))
    .select_from(tables.buckets.outerjoin(tables.objects, sa.and_(
        tables.objects.c.bucket == tables.buckets.c.name, tables.objects.c.key == sa.bindparam("key"))))
    .where(tables.buckets.c.name == sa.bindparam("bucket"))
)  # fmt: skip


def segment_ids(segments_json: str) -> list[str]:
    return [blob_id for blob_id, _ in json.loads(segments_json)]


class ObjectStore:
    """Disk + database of the S3 endpoint. `ObjectStore(DATA, "sqlite:///DATA/s3.db")`."""

    def __init__(
        self,
        data_dir: Path,
        db_url: str,
        *,
        region: str = "us-east-1",
        schema: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(data_dir) / "s3"
        self.root.mkdir(parents=True, exist_ok=True)
        self.region = region
        self.clock = clock
        self.db = Database(db_url, schema=schema)
        self.blobs = BlobStore(self.root, self.db, clock)
        self.recovered = self.blobs.recover()
        self.keys = AccessKeys(self.db, sealing_box(self.root / "secret.key"), clock)
        self._wakeup = Wakeup()
        self.outbox = SqlOutbox(self.db, self._wakeup, region=region)
        self.uploads = Uploads(self)

    def close(self) -> None:
        try:
            self.blobs.flush()
        finally:
            self.db.close()

    # -- the shared steps of every write ---------------------------------------------------

    def transact(self, work: Callable[[sa.Connection], tuple[Any, list[str]]]) -> Any:
        """Run `work(conn)` -> (result, dead blob ids) in a write transaction (group-committed with
        other threads' writes, db.py); once committed, unlink the dead blobs and wake the outbox's
        waiters."""
        result, dead = self.db.transact(work)
        self.blobs.unlink(dead)
        self._wakeup.notify()
        return result

    def bucket_row(self, conn: sa.Connection, caller: Caller, name: str, *, lock: str | None = None) -> Bucket:
        """The bucket, checked to be the caller's; `lock` "share" or "update" on PostgreSQL."""
        row = conn.execute(_BUCKET[lock], {"name": name}).first()
        _check_owner(row, caller, name)
        return Bucket(row.name, row.owner, row.created_at)

    def replace_object(
        self, conn: sa.Connection, bucket: str, key: str, values: dict[str, Any],
        precondition: Precondition | None = None,
    ) -> list[str]:
        """Insert or overwrite the object's row (if `precondition(current ETag or None)` allows);
        return the blob ids it no longer uses."""
        old = conn.execute(_OBJECT_FOR_UPDATE, {"bucket": bucket, "key": key}).first()
        if precondition is not None:
            precondition(old.etag if old is not None else None)
        if old is None:
            conn.execute(tables.objects.insert(), {"bucket": bucket, "key": key, **values})
            return []
        conn.execute(_UPDATE_OBJECT, {"b_bucket": bucket, "b_key": key, **values})
        return segment_ids(old.segments)

    def emit(
        self, conn: sa.Connection, caller: Caller, event_name: str, bucket: str, key: str,
        size: int | None, etag: str | None, now: float,
    ) -> None:
        """The outbox row of an event; must run after the object's row was written (see events.py)."""
        conn.execute(tables.outbox.insert(), {
            "bucket": bucket, "key": key, "event_name": event_name, "size": size, "etag": etag,
            "principal": caller.access_key_id, "source_ip": caller.source_ip, "request_id": caller.request_id,
            "created_at": now,
        })  # fmt: skip

    def commit_object(
        self, caller: Caller, bucket: str, key: str, *, etag: str, event_name: str, content: Content,
        precondition: Precondition | None = None,
    ) -> ObjectInfo:
        """Make an object of written blobs visible, in one transaction with its event.
        `content(conn)` -> (segments, meta, dead blob ids) runs first in that transaction;
        `precondition` (a conditional write: If-Match, If-None-Match) may refuse it."""
        validate_key(key)

        def work(conn: sa.Connection) -> tuple[ObjectInfo, list[str]]:
            self.bucket_row(conn, caller, bucket, lock="share")
            segments, meta, dead = content(conn)
            size = sum(s for _, s in segments)
            now = self.clock()
            values = dict(
                size=size, etag=etag, content_type=meta.content_type, meta=meta.to_json(),
                segments=json.dumps(segments), last_modified=now,
            )  # fmt: skip
            dead = dead + self.replace_object(conn, bucket, key, values, precondition)
            self.blobs.commit(conn, new=[b for b, _ in segments], dead=dead)
            self.emit(conn, caller, event_name, bucket, key, size, etag, now)
            return ObjectInfo(bucket, key, size, etag, now, meta, segments), dead

        return self.transact(work)

    # -- buckets -------------------------------------------------------------------------------

    def create_bucket(self, caller: Caller, name: str) -> Bucket:
        validate_bucket_name(name)
        t = tables.buckets

        def work(conn: sa.Connection) -> tuple[Bucket, list[str]]:
            row = conn.execute(sa.select(t.c.owner).where(t.c.name == name)).first()
            if row is not None:
                if row.owner == caller.owner:
                    raise Conflict(
                        f"Your previous request to create the named bucket succeeded and you already own it: {name}",
                        code="BucketAlreadyOwnedByYou",
                    )
                raise Conflict(
                    f"The requested bucket name is not available: {name}; choose another", code="BucketAlreadyExists"
                )
            bucket = Bucket(name, caller.owner, self.clock())
            conn.execute(t.insert().values(name=name, owner=bucket.owner, created_at=bucket.created_at))
            return bucket, []

        return self.transact(work)

    def head_bucket(self, caller: Caller, name: str) -> Bucket:
        with self.db.read() as conn:
            return self.bucket_row(conn, caller, name)

    def list_buckets(self, caller: Caller) -> list[Bucket]:
        t = tables.buckets
        with self.db.read() as conn:
            rows = conn.execute(sa.select(t).where(t.c.owner == caller.owner).order_by(t.c.name))
            return [Bucket(r.name, r.owner, r.created_at) for r in rows]

    def delete_bucket(self, caller: Caller, name: str) -> None:
        """Refused while it holds objects (BucketNotEmpty); multipart uploads in it are aborted."""

        def work(conn: sa.Connection) -> tuple[None, list[str]]:
            self.bucket_row(conn, caller, name, lock="update")
            o = tables.objects
            if conn.execute(sa.select(o.c.key).where(o.c.bucket == name).limit(1)).first() is not None:
                raise Conflict(
                    f"The bucket you tried to delete is not empty: {name}; delete its objects first",
                    code="BucketNotEmpty",
                )
            dead = self.uploads.drop_all(conn, name)
            self.blobs.commit(conn, new=[], dead=dead)
            conn.execute(tables.buckets.delete().where(tables.buckets.c.name == name))
            return None, dead

        self.transact(work)

    # -- objects -------------------------------------------------------------------------------

    def writer(self) -> BlobWriter:
        """A blob to write an object's (or a part's) data into; `finish()` or `abort()` it."""
        return self.blobs.writer()

    def check_bucket(self, caller: Caller, bucket: str) -> None:
        """Fail early (before a body is read) if the bucket is missing or not the caller's."""
        self.head_bucket(caller, bucket)

    def put_object(
        self, caller: Caller, bucket: str, key: str, blob: BlobWriter, etag: str, meta: ObjectMeta,
        event_name: str = events.CREATED_PUT, precondition: Precondition | None = None,
    ) -> ObjectInfo:
        """Commit a finished blob as the object (replacing any); ObjectCreated:Put by default."""
        segments = [(blob.blob_id, blob.size)]
        return self.commit_object(
            caller, bucket, key, etag=etag, event_name=event_name, content=lambda _: (segments, meta, []),
            precondition=precondition,
        )

    def get_object(self, caller: Caller, bucket: str, key: str) -> ObjectInfo:
        validate_key(key)
        with self.db.read() as conn:
            row = conn.execute(_GET_OBJECT, {"bucket": bucket, "key": key}).first()
        _check_owner(row, caller, bucket)
        if row.size is None:
            raise no_such_key(key)
        return _row_to_info(row)

    def open_object(
        self, caller: Caller, bucket: str, key: str, choose: Callable[[ObjectInfo], tuple[int, int]] | None = None
    ) -> tuple[ObjectInfo, SegmentReader]:
        """The object and a reader of bytes `choose(info)` (inclusive; default all), consistent
        with each other even if the object is overwritten meanwhile."""
        for attempt in range(RETRIES):
            info = self.get_object(caller, bucket, key)
            start, end = choose(info) if choose is not None else (0, info.size - 1)
            try:
                return info, SegmentReader(self.blobs, info.segments, start, end)
            except FileNotFoundError:
                if attempt == RETRIES - 1:
                    raise
        raise AssertionError("unreachable")

    def delete_object(self, caller: Caller, bucket: str, key: str) -> bool:
        """Delete the object; True if it existed (and an ObjectRemoved:Delete event was written)."""
        return self.delete_objects(caller, bucket, [key])[0] is True

    def delete_objects(self, caller: Caller, bucket: str, keys: Iterable[str]) -> list[bool | UserError]:
        """Delete keys in one transaction; per key: existed (True/False) or the error it raised."""
        keys = list(keys)
        t = tables.objects

        def work(conn: sa.Connection) -> tuple[list[bool | UserError], list[str]]:
            self.bucket_row(conn, caller, bucket, lock="share")
            results: list[bool | UserError] = []
            dead: list[str] = []
            now = self.clock()
            for key in keys:
                try:
                    validate_key(key)
                except UserError as exc:
                    results.append(exc)
                    continue
                where = (t.c.bucket == bucket) & (t.c.key == key)
                row = conn.execute(t.delete().where(where).returning(t.c.segments)).first()
                results.append(row is not None)
                if row is not None:
                    dead += segment_ids(row.segments)
                    self.emit(conn, caller, events.REMOVED_DELETE, bucket, key, None, None, now)
            self.blobs.commit(conn, new=[], dead=dead)
            return results, dead

        return self.transact(work)

    def copy_blob(self, source: ObjectInfo, reader: SegmentReader, *, whole: bool) -> tuple[BlobWriter, str]:
        """A finished blob of what `reader` has left, and its MD5; the source's ETag is reused
        (and the copy done in the kernel) when it is the whole of a single-part object."""
        blob = self.writer()
        try:
            if whole and source.parts_count is None:
                reader.copy_to(blob)
                etag = source.etag
            else:
                md5 = hashlib.md5()
                while data := reader.read(1 << 20):
                    md5.update(data)
                    blob.write(data)
                etag = md5.hexdigest()
            blob.finish()
        except BaseException:
            blob.abort()
            raise
        return blob, etag

    def copy_object(
        self, caller: Caller, source: ObjectInfo, reader: SegmentReader, bucket: str, key: str, meta: ObjectMeta
    ) -> ObjectInfo:
        """Write the source's bytes (from its open reader) as a new object; ObjectCreated:Copy."""
        validate_key(key)
        self.check_bucket(caller, bucket)
        blob, etag = self.copy_blob(source, reader, whole=True)
        try:
            return self.put_object(caller, bucket, key, blob, etag, meta, events.CREATED_COPY)
        except BaseException:
            blob.abort()
            raise

    # -- listing -------------------------------------------------------------------------------

    def list_objects(
        self, caller: Caller, bucket: str, *, prefix: str = "", delimiter: str = "", start_after: str = "",
        max_keys: int = 1000,
    ) -> Page[ListEntry]:
        t = tables.objects
        upper = prefix_upper(prefix)
        columns = (t.c.key, t.c.size, t.c.etag, t.c.last_modified)
        with self.db.read() as conn:
            self.bucket_row(conn, caller, bucket)

            def fetch(bound: str, inclusive: bool, limit: int) -> list[ListEntry]:
                cond = [t.c.bucket == bucket, t.c.key >= bound if inclusive else t.c.key > bound]
                if upper is not None:
                    cond.append(t.c.key < upper)
                rows = conn.execute(sa.select(*columns).where(*cond).order_by(t.c.key).limit(limit))
                return [ListEntry(r.key, r.size, r.etag, r.last_modified) for r in rows]

            return list_page(fetch, prefix=prefix, delimiter=delimiter, start_after=start_after, max_keys=max_keys)
