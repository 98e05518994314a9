"""Invocation routes: the API (`POST /v1/functions/{name}/invocations`, synchronous or, with
`X-Mist-Invocation-Type: Event`, asynchronous), the HTTP trigger (`/fn/{name}/...`) and
invocations (`GET /v1/invocations/{id}`: an asynchronous invocation's status, or a record)."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from mist.control.events import check_idempotency_key
from mist.control.invocations import new_invocation_id
from mist.core import httpevent
from mist.errors import InvalidRequest, NotFound, PayloadTooLarge, PlatformError
from mist.gateway.auth import allow, authorize_scope, principal_of
from mist.gateway.services import Services
from mist.models import DEFAULT_TENANT, NAME_RE, split_id
from mist.tenancy.roles import Action, Caller
from mist.worker.types import InvokeResult

MAX_PAYLOAD = 6 * 1024 * 1024  # Lambda's synchronous payload limit, 6 MB
HOP_BY_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive"}
HTTP_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]

router = APIRouter()


def too_large_message(size: int | None, limit: int = MAX_PAYLOAD) -> str:
    said = f"is {size:,} bytes" if size is not None else f"is over {limit:,} bytes"
    return (
        f"the payload {said}; the limit is {limit:,} bytes ({limit / 1024 / 1024:g} MB). "
        "Pass large data by reference (e.g. an object-store key) instead"
    )


async def read_body(request: Request, limit: int = MAX_PAYLOAD) -> bytes:
    """The request body, refused with PayloadTooLarge as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(too_large_message(int(declared), limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(too_large_message(None, limit))
        chunks.append(chunk)
    return b"".join(chunks)


def parse_version(raw: str | None) -> int | None:
    """The `?version=` qualifier: a version number, or None for the newest."""
    if raw is None or raw in ("", "latest", "$LATEST"):
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidRequest(f"version must be a version number like 3 (or 'latest'), got {raw!r}")
    return int(raw)


def check_payload(body: bytes) -> bytes:
    """The event to send: the body if it is JSON, `null` if empty; InvalidRequest otherwise."""
    if not body.strip():
        return b"null"
    # json.loads, with one decoder; a body starting with two non-zero ASCII bytes (any JSON text
    # but UTF-16/32 or a BOM) is UTF-8 without json.detect_encoding's Python
    first = body[0]
    encoding = "utf-8" if 0 < first < 0x80 and (len(body) < 2 or body[1]) else json.detect_encoding(body)
    try:
        _STRICT.decode(body.decode(encoding, "surrogatepass"))
    except ValueError as exc:
        raise InvalidRequest(
            f"the request body is not JSON ({exc}); send the event as JSON, e.g. -d '{{\"name\": \"x\"}}'"
        ) from None
    return body


def _not_json(name: str) -> object:
    """NaN and Infinity: Python's json reads them, JSON (RFC 8259) has no such values, and a
    handler in another language or the Lambda runtime would refuse the event."""
    raise ValueError(f"{name} is not a JSON value; send null or a string instead")


_STRICT = json.JSONDecoder(parse_constant=_not_json)


def error_json(error: dict[str, object] | None) -> bytes:
    return json.dumps(error or {"errorType": "Unknown", "errorMessage": "", "stackTrace": []}).encode()


INVOCATION_TYPES = ("RequestResponse", "Event")
TYPE_HEADER = "X-Mist-Invocation-Type"
KEY_HEADER = "X-Mist-Idempotency-Key"


def is_event(invocation_type: str | None, idempotency_key: str | None) -> bool:
    """Whether the headers ask for an asynchronous invocation; InvalidRequest if they are wrong."""
    kind = invocation_type or "RequestResponse"
    if kind not in INVOCATION_TYPES:
        raise InvalidRequest(f"{TYPE_HEADER} must be RequestResponse or Event, got {kind!r}")
    if idempotency_key is not None:
        if kind != "Event":
            raise InvalidRequest(f"{KEY_HEADER} applies to asynchronous invocations: add {TYPE_HEADER}: Event")
        check_idempotency_key(idempotency_key, KEY_HEADER)
    return kind == "Event"


async def accept_event(
    services: Services, name: str, version: int | None, payload: bytes, idempotency_key: str | None
) -> tuple[bytes, dict[str, str]]:
    """Store an asynchronous invocation: the 202 answer's body and headers, sent only once the
    event is committed. A repeated idempotency key answers the first invocation's id."""
    if services.events is None:
        raise PlatformError("asynchronous invocations are not served here; this server has no event queue")
    if services.billing is not None:  # a tenant over its spend cap is refused now, not when the event runs
        services.billing.check(await services.functions.resolve(name, version))  # type: ignore[attr-defined]
    got = await services.events.accept(name, payload, trigger="event", idempotency_key=idempotency_key,
                                       version=version)  # fmt: skip
    headers = {"X-Mist-Invocation-Id": got.invocation_id}
    if not got.created:
        headers["X-Mist-Idempotent-Replayed"] = "true"
    return json.dumps({"invocation_id": got.invocation_id}).encode(), headers


def result_answer(inv_id: str, version: int, r: InvokeResult) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of an invocation's answer: 200 and the handler's value as-is, or
    500 with X-Mist-Function-Error and Lambda's error body."""
    headers = result_headers(inv_id, version, r.cold_start, r.duration_ms)
    if r.ok:
        return 200, headers, r.payload
    headers["X-Mist-Function-Error"] = "Unhandled"
    return 500, headers, error_json(r.error)


def result_headers(inv_id: str, version: int, cold: bool, duration_ms: float) -> dict[str, str]:
    return {
        "X-Mist-Invocation-Id": inv_id,
        "X-Mist-Version": str(version),
        "X-Mist-Cold-Start": "true" if cold else "false",
        "X-Mist-Duration-Ms": f"{duration_ms:.3f}",
    }


@router.post(
    "/v1/functions/{name}/invocations",
    summary="Invoke a function (synchronously, or asynchronously with X-Mist-Invocation-Type: Event)",
    responses={
        200: {"description": "The handler's return value (JSON)"},
        202: {"description": "Event: stored, will run at least once; body {\"invocation_id\"}"},
        500: {"description": "Function error (header X-Mist-Function-Error, Lambda error body)"},
        404: {"description": "No such function"},
        413: {"description": "Payload over 6 MB"},
        429: {"description": "Queue full; retry after Retry-After"},
        503: {"description": "No capacity in time; retry after Retry-After"},
    },
    openapi_extra={  # the route (and the fast path) read these themselves
        "parameters": [
            {"name": "version", "in": "query", "required": False, "description": "a version number, or latest",
             "schema": {"anyOf": [{"type": "integer", "minimum": 1}, {"enum": ["latest", "$LATEST"]}]}},
            {"name": TYPE_HEADER, "in": "header", "required": False, "schema": {"enum": list(INVOCATION_TYPES)}},
            {"name": KEY_HEADER, "in": "header", "required": False, "description": "asynchronous invocations only",
             "schema": {"type": "string", "pattern": "^[ -~]{1,255}$"}},
        ],
        "requestBody": {"required": False, "description": "the event: any JSON (none: null)",
                        "content": {"application/json": {"schema": {}, "example": {"name": "x"}}}},
    },
)
async def invoke(name: str, request: Request, caller: Caller = Depends(allow(Action.FUNCTIONS_INVOKE))) -> Response:
    """Served by `mist/gateway/fastpath.py` in `mist up`; declared here for the OpenAPI document
    and as the same behaviour for apps built without the fast path."""
    services: Services = request.app.state.services
    name = caller.fid(name)
    version = parse_version(request.query_params.get("version"))
    key = request.headers.get(KEY_HEADER)
    event = is_event(request.headers.get(TYPE_HEADER), key)
    fv = await services.functions.resolve(name, version)
    if services.admission is not None:
        await services.admission.check_rate(fv)
    payload = check_payload(await read_body(request))
    if event:
        body, headers = await accept_event(services, name, version, payload, key)
        return Response(body, status_code=202, media_type="application/json", headers=headers)
    out = await services.invocations.invoke(fv, payload, trigger="api")
    status, headers, body = result_answer(out.invocation_id, fv.version, out.result)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


@router.get(
    "/v1/invocations/{invocation_id}",
    summary="An asynchronous invocation's status and attempts, or an invocation's record and log lines",
)
async def get_invocation(invocation_id: str, request: Request,
                         caller: Caller = Depends(allow(Action.INVOCATIONS_READ))) -> Response:
    services: Services = request.app.state.services
    missing = NotFound(f"no invocation {invocation_id!r}; the id is in the X-Mist-Invocation-Id header of the answer")
    if services.events is not None:
        view = await services.events.get(invocation_id)
        if view is not None:
            if split_id(view.function)[0] != caller.tenant:
                raise missing
            return JSONResponse(view.to_json())
    found = await services.records.get(invocation_id)
    if found is None or split_id(found[0].function)[0] != caller.tenant:
        raise missing
    record, logs = found
    return JSONResponse(record.to_json(logs))


@router.get("/v1/functions/{name}/invocations", summary="Recent invocations of a function, newest first")
async def list_invocations(name: str, request: Request, limit: int = 50,
                           caller: Caller = Depends(allow(Action.INVOCATIONS_READ))) -> Response:
    services: Services = request.app.state.services
    name = caller.fid(name)
    await services.functions.get(name)
    limit = max(1, min(limit, 1000))
    records = await services.records.list(name, limit)
    return JSONResponse({"invocations": [r.to_json() for r in records]})


def trigger_function(request: Request) -> tuple[str, str]:
    """(tenant, name) of `/fn/{name}` (the default tenant) or `/fn/{name}.{tenant}` (as OpenFaaS
    names the functions of a namespace)."""
    name, _, tenant = request.path_params["name"].partition(".")
    return tenant or DEFAULT_TENANT, name


async def http_trigger(request: Request) -> Response:
    services: Services = request.app.state.services
    tenant, name = trigger_function(request)
    missing = NotFound(f"function {name!r} does not exist; `mist ls` lists the deployed functions")
    if not NAME_RE.fullmatch(tenant):
        raise missing
    fv = await services.functions.resolve(Caller(None, tenant).fid(name))
    if fv.http_auth == "key":  # the function's tenant's keys only; another tenant's key finds nothing
        caller = authorize_scope(request.scope, Action.FUNCTIONS_INVOKE, services.tenancy)
        if caller.tenant != tenant and not (caller.principal and caller.principal.is_admin):
            raise missing
    if services.admission is not None:
        await services.admission.check_rate(fv)
    authenticated = principal_of(request.scope) is not None
    body = await read_body(request)
    inv_id = new_invocation_id()
    client = request.client
    event = httpevent.build_event(
        method=request.method,
        path="/" + request.path_params.get("path", ""),
        raw_query=request.url.query,
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]
                 if not (authenticated and k == b"authorization")],  # a mist key is never shown to the function
        body=body,
        source_ip=client.host if client else "",
        request_id=inv_id,
        function_name=name,
        now=time.time(),
        protocol=f"HTTP/{request.scope.get('http_version', '1.1')}",
    )
    out = await services.invocations.invoke(fv, json.dumps(event).encode(), trigger="http", invocation_id=inv_id)
    r = out.result
    headers = result_headers(inv_id, fv.version, r.cold_start, r.duration_ms)
    if not r.ok:
        headers["X-Mist-Function-Error"] = "Unhandled"
        return JSONResponse(r.error, status_code=502, headers=headers)
    try:
        mapped = httpevent.map_response(json.loads(r.payload), r.payload)
    except httpevent.BadFunctionResponse as exc:
        headers["X-Mist-Function-Error"] = "Unhandled"
        return JSONResponse(
            {"errorType": "Runtime.InvalidResponse", "errorMessage": f"the function's response is malformed: {exc}",
             "stackTrace": []},
            status_code=502,
            headers=headers,
        )  # fmt: skip
    resp = Response(mapped.body, status_code=mapped.status)
    for k, v in headers.items():
        resp.headers[k] = v
    for k, v in mapped.headers:
        if k not in HOP_BY_HOP:
            resp.headers.append(k, v)
    return resp


for _method in HTTP_METHODS:
    for _path, _suffix in (("/fn/{name}", "root"), ("/fn/{name}/{path:path}", "path")):
        router.add_api_route(
            _path,
            http_trigger,
            methods=[_method],
            operation_id=f"http_trigger_{_suffix}_{_method.lower()}",
            summary="HTTP trigger: the request as an API Gateway payload 2.0 event",
            responses={200: {"description": "the function's response (statusCode, headers, body)"},
                       502: {"description": "the function failed, or its response is malformed (Lambda's error "
                                            "body, header X-Mist-Function-Error)"}},
        )
