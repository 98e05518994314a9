"""The S3 operations: each reads its request, runs the store in worker threads, builds the answer.

Request bodies go through bodies.py (`receive_blob` for objects and parts, `receive_small` for XML).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from mist.errors import InvalidRequest, UserError
from mist.s3 import rules, wire
from mist.s3.blobs import BlobWriter, SegmentReader
from mist.s3.bodies import declared_put, object_meta, receive_blob, receive_small
from mist.s3.edge import SEND_BYTES, Request, Response, xml
from mist.s3.intake import Intake
from mist.s3.model import ObjectInfo, Part
from mist.s3.store import ObjectStore

EARLY_CHECK_BYTES = 1 << 20  # bodies larger than this are refused before they are read, if they must be
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type", "response-content-language": "Content-Language",
    "response-expires": "Expires", "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition", "response-content-encoding": "Content-Encoding",
}  # fmt: skip


@dataclass(frozen=True)
class Context:
    store: ObjectStore
    clock: Callable[[], float]


_run = asyncio.to_thread  # every store call blocks (disk, database): run it in a worker thread


def _int_param(req: Request, name: str, default: int, *, low: int = 0) -> int:
    value = req.params.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if number < low:
        raise InvalidRequest(f"Provided {name} {value!r} is not an integer >= {low}", code="InvalidArgument")
    return number


def _key(req: Request) -> str:
    assert req.key is not None
    rules.validate_key(req.key)
    return req.key


# -- buckets --------------------------------------------------------------------------------------


async def list_buckets(ctx: Context, req: Request) -> Response:
    buckets = await _run(ctx.store.list_buckets, req.caller)
    return xml(wire.list_buckets(req.caller.owner, buckets))


async def create_bucket(ctx: Context, req: Request) -> Response:
    wire.check_create_bucket(await receive_small(req, 65536))
    assert req.bucket is not None
    await _run(ctx.store.create_bucket, req.caller, req.bucket)
    return Response(200, [("Location", f"/{req.bucket}")])


async def head_bucket(ctx: Context, req: Request) -> Response:
    await _run(ctx.store.head_bucket, req.caller, req.bucket)
    return Response(200, [("x-amz-bucket-region", ctx.store.region)])


async def delete_bucket(ctx: Context, req: Request) -> Response:
    await _run(ctx.store.delete_bucket, req.caller, req.bucket)
    return Response(204)


async def get_location(ctx: Context, req: Request) -> Response:
    await _run(ctx.store.head_bucket, req.caller, req.bucket)
    return xml(wire.location(ctx.store.region))


def _token(marker: str) -> str:
    return base64.urlsafe_b64encode(marker.encode()).decode().rstrip("=")


def _untoken(token: str) -> str:
    try:
        return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, ValueError):
        raise InvalidRequest("The continuation token provided is incorrect", code="InvalidArgument") from None


async def list_objects(ctx: Context, req: Request) -> Response:
    p = req.params
    v2 = p.get("list-type") == "2"
    max_keys = min(_int_param(req, "max-keys", 1000), 1000)
    prefix, delimiter = p.get("prefix", ""), p.get("delimiter", "")
    token = p.get("continuation-token") if v2 else None
    start = _untoken(token) if token is not None else p.get("start-after" if v2 else "marker", "")
    wire.url_encoder(p.get("encoding-type"))  # refuse an unknown encoding before the work
    page = await _run(lambda: ctx.store.list_objects(
        req.caller, req.bucket, prefix=prefix, delimiter=delimiter, start_after=start, max_keys=max_keys,
    ))  # fmt: skip
    owner = req.caller.owner if (not v2 or p.get("fetch-owner") == "true") else None
    body = wire.list_objects(
        req.bucket or "", page, v2=v2, prefix=prefix, delimiter=delimiter, max_keys=max_keys,
        encoding_type=p.get("encoding-type"), owner_id=owner, start_after=p.get("start-after", ""),
        marker=p.get("marker", ""), continuation_token=token,
        next_token=_token(page.marker) if page.truncated and page.marker is not None else None,
    )  # fmt: skip
    return xml(body)


# -- objects --------------------------------------------------------------------------------------


def _object_headers(info: ObjectInfo, req: Request) -> list[tuple[str, str]]:
    headers = {
        "Content-Type": info.meta.content_type, "ETag": wire.quoted(info.etag),
        "Last-Modified": rules.http_date(info.last_modified), "Accept-Ranges": "bytes",
    }  # fmt: skip
    headers.update({name.title(): value for name, value in info.meta.headers.items()})
    for param, header in RESPONSE_OVERRIDES.items():
        if param in req.params:
            headers[header] = req.params[param]
    return [*headers.items(), *((f"x-amz-meta-{k}", v) for k, v in info.meta.user.items())]


def _preconditions(req: Request, info: ObjectInfo) -> None:
    outcome = rules.check_preconditions(req.headers, info.etag, info.last_modified)
    if outcome == 304:
        raise UserError("Not Modified", code="NotModified")
    if outcome == 412:
        raise UserError("At least one of the pre-conditions you specified did not hold", code="PreconditionFailed")


def _whole_or_range(req: Request) -> Callable[[ObjectInfo], tuple[int, int]]:
    def choose(info: ObjectInfo) -> tuple[int, int]:
        _preconditions(req, info)
        return rules.parse_range(req.headers.get("range"), info.size) or (0, info.size - 1)

    return choose


def _ranged(req: Request, info: ObjectInfo, headers: list[tuple[str, str]]) -> tuple[int, int]:
    span = rules.parse_range(req.headers.get("range"), info.size)
    start, end = span or (0, info.size - 1)
    headers.append(("Content-Length", str(end - start + 1)))
    if span is not None:
        headers.append(("Content-Range", f"bytes {start}-{end}/{info.size}"))
    return 206 if span is not None else 200, end - start + 1


async def get_object(ctx: Context, req: Request) -> Response:
    key = _key(req)
    if "partNumber" in req.params:
        raise UserError("GetObject by partNumber is not supported; use a Range", code="NotImplemented")

    def fetch() -> tuple[ObjectInfo, SegmentReader | None, bytes]:
        """The object, and its first bytes; the reader too if there are more (small objects: one hand-off)."""
        info, reader = ctx.store.open_object(req.caller, req.bucket or "", key, _whole_or_range(req))
        try:
            first = reader.read(SEND_BYTES)
            if not reader.more():
                reader.close()
                return info, None, first
        except BaseException:
            reader.close()
            raise
        return info, reader, first

    info, reader, first = await _run(fetch)
    headers = _object_headers(info, req)
    status, _ = _ranged(req, info, headers)
    return Response(status, headers, first if reader is None else _stream(reader, first))


async def _stream(reader: SegmentReader, first: bytes) -> AsyncGenerator[bytes, None]:
    try:
        yield first
        while data := await asyncio.to_thread(reader.read, SEND_BYTES):
            yield data
    finally:
        await asyncio.to_thread(reader.close)


async def head_object(ctx: Context, req: Request) -> Response:
    key = _key(req)
    info = await _run(ctx.store.get_object, req.caller, req.bucket, key)
    _whole_or_range(req)(info)
    headers = _object_headers(info, req)
    status, _ = _ranged(req, info, headers)
    return Response(status, headers)


async def put_object(ctx: Context, req: Request) -> Response:
    key = _key(req)
    meta = object_meta(req)
    declared = declared_put(req)
    if declared > EARLY_CHECK_BYTES:
        await _run(ctx.store.check_bucket, req.caller, req.bucket)

    precondition = rules.write_precondition(req.headers)

    def commit(blob: BlobWriter, md5: str, intake: Intake) -> tuple[ObjectInfo, dict[str, str]]:
        info = ctx.store.put_object(req.caller, req.bucket or "", key, blob, md5, meta, precondition=precondition)
        return info, intake.checksums()

    info, checksums = await receive_blob(ctx.store, req, declared, commit)
    return Response(200, [("ETag", wire.quoted(info.etag)), *_checksum_headers(checksums)])


def _checksum_headers(checksums: dict[str, str]) -> list[tuple[str, str]]:
    return [(f"x-amz-checksum-{a}", v) for a, v in checksums.items()]


async def delete_object(ctx: Context, req: Request) -> Response:
    key = _key(req)
    await _run(ctx.store.delete_object, req.caller, req.bucket, key)
    return Response(204)


async def delete_objects(ctx: Context, req: Request) -> Response:
    keys, quiet = wire.parse_delete(await receive_small(req))
    results = await _run(ctx.store.delete_objects, req.caller, req.bucket, keys)
    deleted = [k for k, r in zip(keys, results) if not isinstance(r, UserError)]
    errors = [(k, r.code, r.message) for k, r in zip(keys, results) if isinstance(r, UserError)]
    return xml(wire.delete_result(deleted, errors, quiet=quiet))


def _copy_source(req: Request) -> tuple[str, str]:
    raw = req.headers["x-amz-copy-source"]
    path, _, version = raw.partition("?")
    if version and version not in ("versionId=null", "versionId="):
        raise UserError("object versions are not supported: the copy source names a versionId", code="NotImplemented")
    bucket, _, key = unquote(path).lstrip("/").partition("/")
    if not bucket or not key:
        raise InvalidRequest(
            f"Copy Source must mention the source bucket and key: sourcebucket/sourcekey (got {raw!r})",
            code="InvalidArgument",
        )
    rules.validate_key(key)
    return bucket, key


def _copy_choose(req: Request, span: tuple[int, int] | None = None) -> Callable[[ObjectInfo], tuple[int, int]]:
    def choose(info: ObjectInfo) -> tuple[int, int]:
        outcome = rules.check_preconditions(req.headers, info.etag, info.last_modified, prefix="x-amz-copy-source-if-")
        if outcome is not None:
            raise UserError("At least one of the pre-conditions you specified did not hold", code="PreconditionFailed")
        if span is None:
            if info.size > rules.MAX_PUT_SIZE:
                raise InvalidRequest(
                    f"The specified copy source is larger than the maximum allowable size for a copy source: "
                    f"{rules.MAX_PUT_SIZE}; copy it with a multipart upload (UploadPartCopy)",
                )
            return 0, info.size - 1
        if span[1] >= info.size:
            raise InvalidRequest(
                f"Range specified is not valid for source object of size: {info.size}", code="InvalidRange"
            )
        return span

    return choose


async def copy_object(ctx: Context, req: Request) -> Response:
    key = _key(req)
    src_bucket, src_key = _copy_source(req)
    directive = req.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise InvalidRequest(f"Unknown metadata directive {directive!r}: use COPY or REPLACE", code="InvalidArgument")
    if (src_bucket, src_key) == (req.bucket, key) and directive == "COPY":
        raise InvalidRequest(
            "This copy request is illegal because it is trying to copy an object to itself without changing the "
            "object's metadata, storage class, website redirect location or encryption attributes."
        )
    replaced = object_meta(req) if directive == "REPLACE" else None

    def work() -> ObjectInfo:
        info, reader = ctx.store.open_object(req.caller, src_bucket, src_key, _copy_choose(req))
        try:
            return ctx.store.copy_object(req.caller, info, reader, req.bucket or "", key, replaced or info.meta)
        finally:
            reader.close()

    new = await _run(work)
    return xml(wire.copy_result("CopyObjectResult", new.etag, new.last_modified))


# -- multipart ------------------------------------------------------------------------------------


def _upload_args(req: Request) -> tuple[str, str]:
    return _key(req), req.params["uploadId"]


async def create_upload(ctx: Context, req: Request) -> Response:
    key = _key(req)
    upload_id = await _run(ctx.store.uploads.create, req.caller, req.bucket, key, object_meta(req))
    return xml(wire.initiate_upload(req.bucket or "", key, upload_id))


def _part_number(req: Request) -> int:
    number = _int_param(req, "partNumber", 0, low=1)
    if number > rules.MAX_PARTS:
        raise InvalidRequest(f"Part number must be an integer between 1 and {rules.MAX_PARTS}, inclusive")
    return number


async def upload_part(ctx: Context, req: Request) -> Response:
    key, upload_id = _upload_args(req)
    number = _part_number(req)
    declared = declared_put(req)
    await _run(ctx.store.uploads.check, req.caller, req.bucket, key, upload_id)

    def commit(blob: BlobWriter, md5: str, intake: Intake) -> tuple[str, dict[str, str]]:
        part = ctx.store.uploads.put_part(req.caller, req.bucket or "", key, upload_id, number, blob, md5)
        return part.etag, intake.checksums()

    etag, checksums = await receive_blob(ctx.store, req, declared, commit)
    return Response(200, [("ETag", wire.quoted(etag)), *_checksum_headers(checksums)])


async def upload_part_copy(ctx: Context, req: Request) -> Response:
    key, upload_id = _upload_args(req)
    number = _part_number(req)
    src_bucket, src_key = _copy_source(req)
    span = None
    if "x-amz-copy-source-range" in req.headers:
        raw = req.headers["x-amz-copy-source-range"]
        first, _, last = raw.removeprefix("bytes=").partition("-")
        if not (first.isdigit() and last.isdigit()) or int(last) < int(first):
            raise InvalidRequest(f"The x-amz-copy-source-range value must be of the form bytes=first-last, not {raw!r}")
        span = (int(first), int(last))
        if span[1] - span[0] + 1 > rules.MAX_PUT_SIZE:
            raise InvalidRequest("a part copied from a range is at most 5 GiB")

    def work() -> Part:
        ctx.store.uploads.check(req.caller, req.bucket or "", key, upload_id)
        info, reader = ctx.store.open_object(req.caller, src_bucket, src_key, _copy_choose(req, span))
        try:
            blob, etag = ctx.store.copy_blob(info, reader, whole=span is None)
        finally:
            reader.close()
        try:
            return ctx.store.uploads.put_part(req.caller, req.bucket or "", key, upload_id, number, blob, etag)
        except BaseException:
            blob.abort()
            raise

    part = await _run(work)
    return xml(wire.copy_result("CopyPartResult", part.etag, part.last_modified))


async def complete_upload(ctx: Context, req: Request) -> Response:
    key, upload_id = _upload_args(req)
    precondition = rules.write_precondition(req.headers)
    parts = wire.parse_complete(await receive_small(req))
    info = await _run(ctx.store.uploads.complete, req.caller, req.bucket, key, upload_id, parts, precondition)
    host = req.headers.get("host", "localhost")
    location = f"http://{host}/{req.bucket}/{quote(key, safe='/~')}"
    return xml(wire.complete_upload(location, req.bucket or "", key, info.etag))


async def abort_upload(ctx: Context, req: Request) -> Response:
    key, upload_id = _upload_args(req)
    await _run(ctx.store.uploads.abort, req.caller, req.bucket, key, upload_id)
    return Response(204)


async def list_parts(ctx: Context, req: Request) -> Response:
    key, upload_id = _upload_args(req)
    marker = _int_param(req, "part-number-marker", 0)
    max_parts = min(_int_param(req, "max-parts", 1000), 1000)
    upload, parts, truncated = await _run(
        lambda: ctx.store.uploads.list_parts(req.caller, req.bucket or "", key, upload_id, marker=marker, max_parts=max_parts)
    )
    body = wire.list_parts(upload, parts, owner_id=req.caller.owner, marker=marker, max_parts=max_parts, truncated=truncated)
    return xml(body)


async def list_uploads(ctx: Context, req: Request) -> Response:
    prefix = req.params.get("prefix", "")
    max_uploads = min(_int_param(req, "max-uploads", 1000), 1000)
    uploads = await _run(lambda: ctx.store.uploads.list_uploads(req.caller, req.bucket or "", prefix=prefix, max_uploads=max_uploads))
    return xml(wire.list_uploads(req.bucket or "", uploads, owner_id=req.caller.owner, prefix=prefix, max_uploads=max_uploads))

