"""The invocation fast path: `POST /v1/functions/{name}/invocations` served as raw ASGI.

Invocations are mist's hot path, so they skip FastAPI's routing, request objects and response
classes (a third of the gateway's CPU per request under load). Everything else — including
the same route when the fast path does not apply — goes on to the FastAPI app, where
`mist/gateway/invoke.py` declares the route for the OpenAPI document with the same behaviour.
The two share `parse_version`, `check_payload`, `is_event`, `accept_event` and
`result_answer`, so they cannot drift apart; tests run the same assertions against both.
With `X-Mist-Invocation-Type: Event` the event is stored (mist/control/events.py) and answered
202 without waiting for it to run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from mist.control.invocations import Outcome
from mist.errors import MistError, PayloadTooLarge
from mist.gateway import invoke
from mist.gateway.auth import authorize_scope
from mist.gateway.errors import error_answer
from mist.gateway.services import Services
from mist.gateway.transport import CYCLE, respond, whole_body
from mist.tenancy.roles import Action
from mist.worker.types import InvokeResult

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_PREFIX = "/v1/functions/"
_SUFFIX = "/invocations"
_JSON = (b"content-type", b"application/json")


class InvokeFastPath:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(_PREFIX) and path.endswith(_SUFFIX):
                name = path[len(_PREFIX) : -len(_SUFFIX)]
                if name and "/" not in name:
                    try:
                        await self._invoke(name, scope, receive, send)
                    except MistError as exc:  # raw, as the answers: a refused flood costs little
                        status, headers, body = error_answer(exc)
                        await _answer(send, status, _encode(headers), body)
                    return
        await self.app(scope, receive, send)

    async def _invoke(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        services = self.services
        name = authorize_scope(scope, Action.FUNCTIONS_INVOKE, services.tenancy).fid(name)
        qs: bytes = scope["query_string"]
        version = invoke.parse_version(version_param(qs)) if qs else None
        declared: bytes | None = None
        kind: str | None = None  # X-Mist-Invocation-Type
        key: str | None = None  # X-Mist-Idempotency-Key
        for k, v in scope["headers"]:
            if k == b"content-length":
                declared = v
            elif k == b"x-mist-invocation-type":
                kind = v.decode("latin-1")
            elif k == b"x-mist-idempotency-key":
                key = v.decode("latin-1")
        event = invoke.is_event(kind, key)
        fv = await services.functions.resolve(name, version)
        if services.admission is not None:
            await services.admission.check_rate(fv)  # before the body is read: a flood costs little
        cycle = scope.get(CYCLE)
        body = await _read_body(declared, receive, cycle)
        payload = invoke.check_payload(body)
        if event:
            data, extra = await invoke.accept_event(services, name, version, payload, key)
            await _answer(send, 202, _encode(extra), data, cycle)
            return
        answered = False

        def answer(out: Outcome) -> None:  # sent before the record is made (InvocationService.invoke)
            nonlocal answered
            status, headers, data = _result_answer(out.invocation_id, fv.version, out.result)
            headers.append(_JSON)
            answered = respond(cycle, status, headers, data)

        out = await services.invocations.invoke(fv, payload, trigger="api", answer=None if cycle is None else answer)
        if not answered:  # another server, or uvicorn's cycle cannot take it whole: ASGI messages
            status, headers, data = _result_answer(out.invocation_id, fv.version, out.result)
            await _answer(send, status, headers, data)


def _result_answer(invocation_id: str, version: int, r: InvokeResult) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    status, headers, body = invoke.result_answer(invocation_id, version, r)
    return status, _encode(headers), body


def version_param(query: bytes) -> str | None:
    """The first non-blank `version` of a query string, as `parse_qs(query)["version"][0]`
    gives it. A query with no escapes (`%`, `+`), such as `version=3`, is split here: parse_qs
    costs ~60 us on a sparse request (its code is cold), this a few."""
    qs = query.decode("latin-1")
    if "%" in qs or "+" in qs:
        return parse_qs(qs).get("version", [None])[0]
    for part in qs.split("&"):
        name, _, value = part.partition("=")
        if name == "version" and value:
            return value
    return None


def _encode(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], data: bytes,
                  cycle: Any = None) -> None:
    """An answer as ASGI messages, or, given uvicorn's cycle (for the invocation's own answers:
    refusals go through the audit's ASGI wrapper), in one write on it (mist/gateway/transport.py)."""
    headers.append(_JSON)
    if cycle is not None and respond(cycle, status, headers, data):
        return
    headers.append((b"content-length", str(len(data)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _read_body(declared: bytes | None, receive: Receive, cycle: Any = None) -> bytes:
    if declared is not None and declared.isdigit() and int(declared) > invoke.MAX_PAYLOAD:
        raise PayloadTooLarge(invoke.too_large_message(int(declared)))
    if cycle is not None:  # uvicorn's: all of a small body is usually in already
        body = whole_body(cycle)
        if body is not None:
            if len(body) > invoke.MAX_PAYLOAD:  # chunked: no length declared
                raise PayloadTooLarge(invoke.too_large_message(None))
            return body
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > invoke.MAX_PAYLOAD:
                raise PayloadTooLarge(invoke.too_large_message(None))
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
