"""Request bodies: decoded and checked by an Intake while they stream, into memory (small XML,
`receive_small`) or into a new blob (objects and parts, `receive_blob`).

A blob is committed in the same worker-thread call that checks the body's last bytes, so a small
PUT costs one hand-off to a thread; any failure aborts the blob, and nothing becomes visible.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from mist.errors import PayloadTooLarge
from mist.s3 import rules, sigv4, wire
from mist.s3.blobs import BlobWriter
from mist.s3.chunked import ChunkSigner
from mist.s3.edge import Request, read_body
from mist.s3.intake import Intake
from mist.s3.model import ObjectMeta
from mist.s3.store import ObjectStore

T = TypeVar("T")


def _intake(req: Request, sink: Callable[[bytes], None], declared: int) -> Intake:
    signed_stream = req.payload in (sigv4.STREAMING_SIGNED, sigv4.STREAMING_SIGNED_TRAILER)
    signer = ChunkSigner(req.signing_key, req.claim) if signed_stream and req.claim is not None else None
    return Intake(sink, payload=req.payload, declared=declared, headers=req.headers, signer=signer)


def _raw_limit(req: Request, declared: int) -> int:
    streaming = req.payload in sigv4.STREAMING
    return declared + declared // 8 + 65536 if streaming else declared


async def receive_small(req: Request, limit: int = wire.MAX_XML_BYTES) -> bytes:
    """A small body (XML), checked like any other, in memory."""
    declared = req.declared_length()
    if declared > limit:
        raise PayloadTooLarge(f"the request body is over {limit} bytes", code="EntityTooLarge")
    buf = bytearray()
    intake = _intake(req, buf.extend, declared)
    await read_body(req, intake.feed, intake.finish, _raw_limit(req, declared))
    return bytes(buf)


class _BlobIntake:
    """A body on its way into a new blob. `feed` and `finish` run in worker threads; whatever
    fails in them aborts the blob right there, in order, so a blob is never aborted while the
    thread that may commit it is still running (a cancelled request leaves that to the thread)."""

    def __init__(self, store: ObjectStore, req: Request, declared: int, commit: Callable[[BlobWriter, str, Intake], T]):
        self._store = store
        self._commit = commit
        self.writer: BlobWriter | None = None
        self.intake = _intake(req, self._write, declared)
        self.settled = False  # aborted, or handed to commit

    def _write(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)

    def _guarded(self, step: Callable[[], T]) -> T:
        try:
            if self.writer is None:
                self.writer = self._store.writer()
            return step()
        except BaseException:
            self.abort()
            raise

    def feed(self, data: bytes) -> None:
        self._guarded(lambda: self.intake.feed(data))

    def finish(self) -> T:
        def step() -> T:
            md5 = self.intake.finish()
            assert self.writer is not None
            self.writer.finish()
            result = self._commit(self.writer, md5, self.intake)
            self.settled = True
            return result

        return self._guarded(step)

    def abort(self) -> None:
        if self.writer is not None and not self.settled:
            self.settled = True
            self.writer.abort()


async def receive_blob(
    store: ObjectStore, req: Request, declared: int, commit: Callable[[BlobWriter, str, Intake], T]
) -> T:
    """Stream the body into a new blob, then `commit(blob, md5_hex, intake)` it; abort on any failure."""
    body = _BlobIntake(store, req, declared, commit)
    try:
        return await read_body(req, body.feed, body.finish, _raw_limit(req, declared))
    except Exception:  # failed between hand-offs (a failure in a thread has aborted it already)
        await asyncio.to_thread(body.abort)
        raise


def object_meta(req: Request) -> ObjectMeta:
    stored = rules.stored_headers(req.headers)
    encoding = [e.strip() for e in stored.pop("content-encoding", "").split(",") if e.strip() and e.strip() != "aws-chunked"]
    if encoding:
        stored["content-encoding"] = ",".join(encoding)
    return ObjectMeta(
        req.headers.get("content-type") or "binary/octet-stream", rules.user_metadata(req.header_list), stored
    )


def declared_put(req: Request) -> int:
    declared = req.declared_length()
    if declared > rules.MAX_PUT_SIZE:
        raise PayloadTooLarge(
            f"Your proposed upload exceeds the maximum allowed size: {declared} bytes, at most {rules.MAX_PUT_SIZE} "
            "(5 GiB) in one request; use a multipart upload (boto3's upload_file does)",
            code="EntityTooLarge",
        )
    return declared
