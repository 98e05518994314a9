"""The S3 endpoint's edge: the request and response types, S3's status codes, body streaming.

S3 names its errors by code (NoSuchKey, BucketNotEmpty, SignatureDoesNotMatch, ...); mist raises
them as its own exceptions (`mist.errors`) carrying that code, and this module alone turns a
code into a status, falling back to the gateway's mapping by exception class.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

from mist.errors import InvalidRequest, MistError, PayloadTooLarge, UserError
from mist.gateway.errors import status_for as gateway_status
from mist.s3 import sigv4, wire
from mist.s3.model import Caller

STATUS = {
    "NotModified": 304,
    "AccessDenied": 403, "SignatureDoesNotMatch": 403, "InvalidAccessKeyId": 403, "RequestTimeTooSkewed": 403,
    "NoSuchBucket": 404, "NoSuchKey": 404, "NoSuchUpload": 404,
    "MethodNotAllowed": 405,
    "BucketNotEmpty": 409, "BucketAlreadyExists": 409, "BucketAlreadyOwnedByYou": 409,
    "MissingContentLength": 411, "PreconditionFailed": 412, "InvalidRange": 416,
    "EntityTooLarge": 400, "EntityTooSmall": 400, "MetadataTooLarge": 400,
    "NotImplemented": 501, "SlowDown": 503,
}  # fmt: skip
T = TypeVar("T")
FEED_BYTES = 1 << 20  # body bytes gathered before each hand-off to a worker thread
SEND_BYTES = 1 << 20  # object bytes read per response chunk


def status_for(exc: MistError) -> int:
    return STATUS.get(exc.code) or gateway_status(exc)


class Disconnected(Exception):
    """The client went away before its request body was complete."""


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | AsyncGenerator[bytes, None] = b""


def xml(body: bytes, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, [("Content-Type", "application/xml"), *(headers or [])], body)


def error_response(exc: MistError, resource: str, request_id: str, *, head: bool) -> Response:
    status = status_for(exc)
    if status == 304 or head:
        return Response(status)  # HEAD and 304 answers carry no body; the status says it all
    return xml(wire.error(exc.code, exc.message, resource, request_id), status)


@dataclass
class Request:
    """One S3 request, as parsed from the ASGI scope (path-style: /bucket/key)."""

    scope: dict[str, Any]
    receive: Callable[[], Any]
    method: str
    raw_path: str
    bucket: str | None
    key: str | None
    query: sigv4.Query
    params: dict[str, str]
    header_list: sigv4.Headers
    headers: dict[str, str]
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16].upper())
    caller: Caller = field(default_factory=Caller)
    payload: str = sigv4.UNSIGNED_PAYLOAD  # what the signature says of the body (x-amz-content-sha256)
    claim: sigv4.Claim | None = None  # a V4 signature's claim (chunk signatures chain from it)
    signing_key: bytes = b""
    body_read: bool = False  # the whole body was received

    @property
    def body_unread(self) -> bool:
        """The client sent (or, waiting on Expect: 100-continue, would send) a body not yet read:
        the connection must then close after the answer, or those bytes would be parsed as the next
        request."""
        has_body = self.headers.get("content-length", "0").strip() not in ("", "0") or "transfer-encoding" in self.headers
        return has_body and not self.body_read

    @classmethod
    def parse(cls, scope: dict[str, Any], receive: Callable[[], Any]) -> Request:
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        try:
            path = unquote_to_bytes(raw_path).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest("the request path is not valid UTF-8 once percent-decoded", code="InvalidURI") from None
        bucket, _, key = path.lstrip("/").partition("/") if path.startswith("/") else ("", "", "")
        header_list = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
        headers: dict[str, str] = {}
        for name, value in header_list:
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        query = sigv4.parse_query(scope.get("query_string", b""))
        params: dict[str, str] = {}
        for name, value in query:
            params.setdefault(name, value)
        return cls(
            scope, receive, scope["method"], raw_path, bucket or None, key or None, query, params, header_list, headers
        )

    @property
    def resource(self) -> str:
        return "/" + "/".join(p for p in (self.bucket, self.key) if p)

    def declared_length(self) -> int:
        """The body's length as declared (decoded length for aws-chunked bodies)."""
        streaming = self.payload in sigv4.STREAMING
        name = "x-amz-decoded-content-length" if streaming else "content-length"
        value = self.headers.get(name)
        if value is None:
            if self.method in ("GET", "HEAD", "DELETE") or "transfer-encoding" not in self.headers:
                return 0
            raise UserError(f"You must provide the {name} HTTP header.", code="MissingContentLength")
        if not value.strip().isdigit():
            raise InvalidRequest(f"the {name} header {value!r} is not a number of bytes")
        return int(value)


async def read_body(req: Request, feed: Callable[[bytes], None], finish: Callable[[], T], limit: int) -> T:
    """Receive the body, handing it to `feed` in worker threads in slices of ~1 MiB; the last
    slice and `finish()` go in one hand-off, whose result is returned."""
    pending: list[bytes] = []
    size = total = 0
    while True:
        message = await req.receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        if chunk:
            pending.append(chunk)
            size += len(chunk)
            total += len(chunk)
            if total > limit:
                raise PayloadTooLarge(
                    f"Your proposed upload exceeds the maximum allowed size ({limit} bytes)", code="EntityTooLarge"
                )
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        if not more:
            req.body_read = True
            return await asyncio.to_thread(_last, feed, finish, data)
        if size >= FEED_BYTES:
            pending.clear()
            size = 0
            await asyncio.to_thread(feed, data)


def _last(feed: Callable[[bytes], None], finish: Callable[[], T], data: bytes) -> T:
    if data:
        feed(data)
    return finish()


async def send_response(
    send: Callable[[dict[str, Any]], Any], receive: Callable[[], Any], response: Response
) -> None:
    """Send the answer. A streamed body stops (and its reader closes) as soon as the client goes
    away, rather than reading the rest of a large object for nobody."""
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    body = response.body
    if isinstance(body, bytes):
        if not any(k == b"content-length" for k, _ in headers):
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        async for chunk in body:
            if gone.done():
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        gone.cancel()
        await body.aclose()  # runs the generator's cleanup (closes the object's files)


async def _disconnected(receive: Callable[[], Any]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
