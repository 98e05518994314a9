"""Multipart uploads: parts written as blobs of their own, the object made of them on completion.

CompleteMultipartUpload copies nothing: the object's segments are the listed parts' blobs, in
order, and its ETag is S3's multipart form, hex(MD5(MD5(part 1) || ... || MD5(part N))) + "-N".
Parts not listed are deleted with the upload. An upload lasts until completed or aborted.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import TYPE_CHECKING

import sqlalchemy as sa

from mist.errors import InvalidRequest, NotFound, PayloadTooLarge
from mist.s3 import db as tables
from mist.s3 import events
from mist.s3.blobs import BlobWriter
from mist.s3.listing import prefix_upper
from mist.s3.model import Caller, ObjectInfo, ObjectMeta, Part, Upload
from mist.s3.rules import MAX_PARTS, MIN_PART_SIZE, Precondition, validate_key

if TYPE_CHECKING:
    from mist.s3.store import ObjectStore

_MD5 = re.compile(r"[0-9a-f]{32}")


def multipart_etag(part_etags: list[str]) -> str:
    digest = hashlib.md5(b"".join(bytes.fromhex(e) for e in part_etags)).hexdigest()
    return f"{digest}-{len(part_etags)}"


def validate_part_number(n: int) -> None:
    if not 1 <= n <= MAX_PARTS:
        raise InvalidRequest(f"Part number must be an integer between 1 and {MAX_PARTS}, inclusive (not {n})")


def no_such_upload(upload_id: str) -> NotFound:
    return NotFound(
        f"The specified multipart upload does not exist: {upload_id} (it may have been completed or aborted)",
        code="NoSuchUpload",
    )


class Uploads:
    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def _upload(self, conn: sa.Connection, bucket: str, key: str, upload_id: str, *, lock: bool = False) -> sa.Row:
        t = tables.uploads
        query = sa.select(t).where(t.c.upload_id == upload_id)
        if lock:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None or row.bucket != bucket or row.key != key:
            raise no_such_upload(upload_id)
        return row

    def create(self, caller: Caller, bucket: str, key: str, meta: ObjectMeta) -> str:
        validate_key(key)
        upload_id = uuid.uuid4().hex + uuid.uuid4().hex

        def work(conn: sa.Connection) -> tuple[str, list[str]]:
            self._store.bucket_row(conn, caller, bucket, lock="share")
            conn.execute(tables.uploads.insert().values(
                upload_id=upload_id, bucket=bucket, key=key, content_type=meta.content_type,
                meta=meta.to_json(), created_at=self._store.clock(),
            ))  # fmt: skip
            return upload_id, []

        return self._store.transact(work)

    def check(self, caller: Caller, bucket: str, key: str, upload_id: str) -> None:
        """Fail early (before a part's body is read) if the upload does not exist."""
        with self._store.db.read() as conn:
            self._store.bucket_row(conn, caller, bucket)
            self._upload(conn, bucket, key, upload_id)

    def put_part(
        self, caller: Caller, bucket: str, key: str, upload_id: str, part_number: int, blob: BlobWriter, etag: str
    ) -> Part:
        """Commit a finished blob as a part (replacing the part's earlier upload, if any)."""
        validate_part_number(part_number)
        p = tables.parts

        def work(conn: sa.Connection) -> tuple[Part, list[str]]:
            self._store.bucket_row(conn, caller, bucket, lock="share")
            self._upload(conn, bucket, key, upload_id, lock=True)
            where = (p.c.upload_id == upload_id) & (p.c.part_number == part_number)
            old = conn.execute(p.delete().where(where).returning(p.c.blob_id)).first()
            part = Part(part_number, blob.size, etag, self._store.clock())
            conn.execute(p.insert().values(
                upload_id=upload_id, part_number=part_number, size=part.size, etag=etag, blob_id=blob.blob_id,
                last_modified=part.last_modified,
            ))  # fmt: skip
            dead = [old.blob_id] if old is not None else []
            self._store.blobs.commit(conn, new=[blob.blob_id], dead=dead)
            return part, dead

        return self._store.transact(work)

    def list_parts(
        self, caller: Caller, bucket: str, key: str, upload_id: str, *, marker: int = 0, max_parts: int = 1000
    ) -> tuple[Upload, list[Part], bool]:
        """Parts after `marker`, up to `max_parts`; and whether more follow."""
        p = tables.parts
        with self._store.db.read() as conn:
            self._store.bucket_row(conn, caller, bucket)
            row = self._upload(conn, bucket, key, upload_id)
            rows = conn.execute(
                sa.select(p).where((p.c.upload_id == upload_id) & (p.c.part_number > marker))
                .order_by(p.c.part_number).limit(max_parts + 1)
            ).all()  # fmt: skip
        found = [Part(r.part_number, r.size, r.etag, r.last_modified) for r in rows]
        upload = Upload(row.upload_id, row.bucket, row.key, row.created_at)
        return upload, found[:max_parts], len(found) > max_parts

    def list_uploads(self, caller: Caller, bucket: str, *, prefix: str = "", max_uploads: int = 1000) -> list[Upload]:
        t = tables.uploads
        with self._store.db.read() as conn:
            self._store.bucket_row(conn, caller, bucket)
            cond = [t.c.bucket == bucket, t.c.key >= prefix]
            upper = prefix_upper(prefix)
            if upper is not None:
                cond.append(t.c.key < upper)
            query = sa.select(t).where(*cond).order_by(t.c.key, t.c.created_at).limit(max_uploads)
            rows = conn.execute(query).all()
        return [Upload(r.upload_id, r.bucket, r.key, r.created_at) for r in rows]

    def complete(
        self, caller: Caller, bucket: str, key: str, upload_id: str, requested: list[tuple[int, str]],
        precondition: Precondition | None = None,
    ) -> ObjectInfo:
        """Make the object of the listed parts ((number, ETag), ascending), as S3 checks them."""
        if not requested:
            raise InvalidRequest(
                "The XML you provided was not well-formed: CompleteMultipartUpload lists no parts", code="MalformedXML"
            )
        numbers = [n for n, _ in requested]
        if numbers != sorted(set(numbers)):
            raise InvalidRequest(
                "The list of parts was not in ascending order; parts must be ordered by part number, each once",
                code="InvalidPartOrder",
            )

        def content(conn: sa.Connection) -> tuple[list[tuple[str, int]], ObjectMeta, list[str]]:
            row = self._upload(conn, bucket, key, upload_id, lock=True)
            p = tables.parts
            stored = {r.part_number: r for r in conn.execute(sa.select(p).where(p.c.upload_id == upload_id))}
            segments = []
            for i, (number, etag) in enumerate(requested):
                part = stored.get(number)
                if part is None or part.etag != _unquote(etag):
                    raise InvalidRequest(
                        f"One or more of the specified parts could not be found or its ETag did not match: part "
                        f"{number}; upload each part and pass the ETag its upload returned",
                        code="InvalidPart",
                    )
                if i < len(requested) - 1 and part.size < MIN_PART_SIZE:
                    raise PayloadTooLarge(
                        f"Your proposed upload is smaller than the minimum allowed size: part {number} has "
                        f"{part.size} bytes; every part but the last needs at least {MIN_PART_SIZE} (5 MiB)",
                        code="EntityTooSmall",
                    )
                segments.append((part.blob_id, part.size))
            keep = set(numbers)
            dead = [r.blob_id for n, r in stored.items() if n not in keep]
            conn.execute(p.delete().where(p.c.upload_id == upload_id))
            conn.execute(tables.uploads.delete().where(tables.uploads.c.upload_id == upload_id))
            return segments, ObjectMeta.from_row(row.content_type, row.meta), dead

        if not all(_MD5.fullmatch(_unquote(e)) for _, e in requested):
            raise InvalidRequest(
                "One or more of the specified parts could not be found: an ETag is not one a part upload returned",
                code="InvalidPart",
            )
        etag = multipart_etag([_unquote(e) for _, e in requested])
        return self._store.commit_object(
            caller, bucket, key, etag=etag, event_name=events.CREATED_MULTIPART, content=content,
            precondition=precondition,
        )

    def abort(self, caller: Caller, bucket: str, key: str, upload_id: str) -> None:
        def work(conn: sa.Connection) -> tuple[None, list[str]]:
            self._store.bucket_row(conn, caller, bucket, lock="share")
            self._upload(conn, bucket, key, upload_id, lock=True)
            dead = self._drop(conn, [upload_id])
            self._store.blobs.commit(conn, new=[], dead=dead)
            return None, dead

        self._store.transact(work)

    def drop_all(self, conn: sa.Connection, bucket: str) -> list[str]:
        """Inside a transaction: remove every upload of the bucket; return their parts' blobs."""
        t = tables.uploads
        ids = list(conn.execute(sa.select(t.c.upload_id).where(t.c.bucket == bucket)).scalars())
        return self._drop(conn, ids) if ids else []

    def _drop(self, conn: sa.Connection, upload_ids: list[str]) -> list[str]:
        p = tables.parts
        dead = list(conn.execute(p.delete().where(p.c.upload_id.in_(upload_ids)).returning(p.c.blob_id)).scalars())
        conn.execute(tables.uploads.delete().where(tables.uploads.c.upload_id.in_(upload_ids)))
        return dead


def _unquote(etag: str) -> str:
    return etag.strip().strip('"')
