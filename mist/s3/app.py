"""The S3 endpoint as one ASGI app, built by `build_s3_app(store)`; its request path, in order:

  1. uvicorn (HTTP/1.1, Expect: 100-continue)                             mist/s3/serve.py
  2. parse: path-style /bucket/key, query, headers                          edge.Request.parse
  3. authenticate: SigV4 from the Authorization header or a presigned
     URL (or a SigV2 presigned URL), the access key's secret looked up
     (cached) -> the Caller                                                  sigv4.py, sigv2.py, keys.py
  4. route on method, bucket/key and sub-resource (?uploads, ?delete...)    route() below
  5. the operation; blocking disk and database work in worker threads      handlers.py -> store.py
  6. any MistError -> S3's XML error with S3's status code                  edge.py
There is no other middleware.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mist.errors import MistError, UserError
from mist.s3 import handlers, sigv2, sigv4
from mist.s3.edge import Disconnected, Request, Response, error_response, send_response
from mist.s3.model import Caller
from mist.s3.store import ObjectStore

log = logging.getLogger("mist.s3")

Handler = Callable[[handlers.Context, Request], Awaitable[Response]]

# sub-resources of S3 this endpoint does not serve: answered NotImplemented (501), never
# mistaken for a plain GET or PUT of the bucket or object
UNSUPPORTED = frozenset({
    "accelerate", "acl", "analytics", "attributes", "cors", "encryption", "intelligent-tiering", "inventory",
    "legal-hold", "lifecycle", "logging", "metrics", "notification", "object-lock", "ownershipControls", "policy",
    "policyStatus", "publicAccessBlock", "replication", "requestPayment", "restore", "retention", "select",
    "tagging", "torrent", "versioning", "versions", "website",
})  # fmt: skip


@dataclass(frozen=True)
class S3Statistics:
    requests: int  # answered, including errors
    in_flight: int
    client_errors: int  # 4xx answers
    server_errors: int  # 5xx answers
    disconnects: int  # clients gone before their body was whole
    recovered_blobs: int  # stray uploads removed when the store was opened


class S3App:
    """The ASGI app; `statistics()` counts what it answered."""

    def __init__(self, store: ObjectStore, clock: Callable[[], float]) -> None:
        self.ctx = handlers.Context(store, clock)
        self._counts = {"requests": 0, "in_flight": 0, "client_errors": 0, "server_errors": 0, "disconnects": 0}

    def statistics(self) -> S3Statistics:
        return S3Statistics(**self._counts, recovered_blobs=self.ctx.store.recovered)

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[[], Any], send: Callable[[dict[str, Any]], Any]
    ) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        counts = self._counts
        counts["in_flight"] += 1
        try:
            response = await self._answer(scope, receive)
        finally:
            counts["in_flight"] -= 1
        if response is None:
            counts["disconnects"] += 1
            return
        counts["requests"] += 1
        if response.status >= 500:
            counts["server_errors"] += 1
        elif response.status >= 400:
            counts["client_errors"] += 1
        await send_response(send, receive, response)

    async def _answer(self, scope: dict[str, Any], receive: Callable[[], Any]) -> Response | None:
        req: Request | None = None
        try:
            req = Request.parse(scope, receive)
            await authenticate(self.ctx, req)
            response = await route(req)(self.ctx, req)
        except Disconnected:
            return None
        except MistError as exc:
            resource = req.raw_path if req else scope.get("path", "")
            request_id = req.request_id if req else ""
            if exc.code == "InternalError" or not isinstance(exc, UserError):
                log.error("S3 %s %s failed: %s", scope.get("method"), resource, exc.message)
            response = error_response(exc, resource, request_id, head=scope.get("method") == "HEAD")
        except Exception:
            log.exception("S3 %s %s failed", scope.get("method"), scope.get("path"))
            internal = MistError("We encountered an internal error. Please try again.", code="InternalError")
            response = error_response(internal, scope.get("path", ""), req.request_id if req else "", head=False)
        request_id = req.request_id if req else ""
        response.headers += [("x-amz-request-id", request_id), ("x-amz-id-2", request_id), ("Server", "mist")]
        if req is None or req.body_unread:
            response.headers.append(("Connection", "close"))
        return response


def build_s3_app(store: ObjectStore, *, clock: Callable[[], float] = time.time) -> S3App:
    return S3App(store, clock)


async def _lifespan(receive: Callable[[], Any], send: Callable[[dict[str, Any]], Any]) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def authenticate(ctx: handlers.Context, req: Request) -> None:
    """Check the request's signature; set its Caller, payload mode and signing key.
    Anonymous requests are refused."""
    v2 = sigv2.parse_query_auth(req.query)
    claim = None if v2 else sigv4.parse_query_auth(req.query) or sigv4.parse_header_auth(req.header_list)
    if claim is None and v2 is None:
        raise UserError(
            "Access Denied: anonymous requests are not served; sign them with an access key "
            "(create one with `mist s3 keys create`)",
            code="AccessDenied",
        )
    key_id = v2.access_key_id if v2 is not None else claim.credential.access_key_id  # type: ignore[union-attr]
    fresh, found = ctx.store.keys.cached(key_id)
    if not fresh:
        found = await asyncio.to_thread(ctx.store.keys.lookup, key_id)
    if found is None:
        raise UserError(
            "The AWS Access Key Id you provided does not exist in our records (`mist s3 keys ls` lists them).",
            code="InvalidAccessKeyId",
        )
    secret, owner = found
    now = ctx.clock()
    if v2 is not None:
        sigv2.verify(v2, secret, req.method, req.raw_path, req.query, req.header_list, now)
    else:
        assert claim is not None
        req.signing_key = sigv4.verify(claim, secret, req.method, req.raw_path, req.query, req.header_list, now)
        req.claim, req.payload = claim, claim.payload
    client = req.scope.get("client")
    req.caller = Caller(owner, key_id, client[0] if client else "", req.request_id)


def route(req: Request) -> Handler:
    p, m = req.params, req.method
    unsupported = sorted(UNSUPPORTED.intersection(p))
    if unsupported:
        raise UserError(
            f"A header or query you provided implies functionality that is not implemented: ?{unsupported[0]}",
            code="NotImplemented",
        )
    if req.bucket is None:
        if m == "GET":
            return handlers.list_buckets
    elif req.key is None:
        routes = {
            "GET": handlers.get_location if "location" in p
            else handlers.list_uploads if "uploads" in p else handlers.list_objects,
            "PUT": handlers.create_bucket,
            "HEAD": handlers.head_bucket,
            "DELETE": handlers.delete_bucket,
            "POST": handlers.delete_objects if "delete" in p else None,
        }  # fmt: skip
        if routes.get(m) is not None:
            return routes[m]  # type: ignore[return-value]
    else:
        upload = "uploadId" in p
        copy = "x-amz-copy-source" in req.headers
        routes = {
            "PUT": (handlers.upload_part_copy if copy else handlers.upload_part) if upload and "partNumber" in p
            else handlers.copy_object if copy else handlers.put_object,
            "GET": handlers.list_parts if upload else handlers.get_object,
            "HEAD": handlers.head_object,
            "DELETE": handlers.abort_upload if upload else handlers.delete_object,
            "POST": handlers.create_upload if "uploads" in p else handlers.complete_upload if upload else None,
        }  # fmt: skip
        if routes.get(m) is not None:
            return routes[m]  # type: ignore[return-value]
    raise UserError(f"The specified method is not allowed against this resource: {m} {req.resource}", code="MethodNotAllowed")
