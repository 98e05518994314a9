"""Queue routes: each function's dead-letter queue (list, show, redrive) and mist queues
(list, receive, delete) — the destinations of asynchronous invocations (docs/events.md)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from mist.control.queues import QueueService, dlq_entry, message_json
from mist.errors import InvalidRequest, NotFound, PlatformError
from mist.gateway.auth import allow
from mist.gateway.bodies import json_body
from mist.gateway.services import Services
from mist.tenancy.roles import Action, Caller

READ = Depends(allow(Action.QUEUES_READ))
WRITE = Depends(allow(Action.QUEUES_WRITE))

router = APIRouter()


def _queues(request: Request) -> QueueService:
    services: Services = request.app.state.services
    if services.queues is None:
        raise PlatformError("queues are not served here; this server has no event queue")
    return services.queues


@router.get("/v1/functions/{name}/dlq", summary="A function's dead-letter queue, oldest first")
async def list_dead_letters(name: str, request: Request, limit: int = 100, caller: Caller = READ) -> Response:
    services: Services = request.app.state.services
    await services.functions.get(caller.fid(name))  # NotFound, for another tenant's too
    found = await _queues(request).dead_letters(caller.fid(name), limit=max(1, min(limit, 1000)))
    return JSONResponse({"messages": [dlq_entry(m) for m in found]})


@router.get("/v1/functions/{name}/dlq/{message_id}", summary="One dead-lettered event: its destination record")
async def get_dead_letter(name: str, message_id: str, request: Request, caller: Caller = READ) -> Response:
    m = await _queues(request).dead_letter(caller.fid(name), message_id)
    out = message_json(m)
    return JSONResponse({"id": out["id"], "sent_at": out["sent_at"], "record": out["body"]})


@router.post(
    "/v1/functions/{name}/dlq/redrive",
    summary="Run dead-lettered events again as new asynchronous invocations",
    openapi_extra={"requestBody": {"required": False, "description": "the messages to redrive; none: all",
                                   "content": {"application/json": {"schema": {
                                       "type": "object", "additionalProperties": False,
                                       "properties": {"ids": {"type": "array", "items": {"type": "string"}}}}}}}},
)
async def redrive(name: str, request: Request, caller: Caller = WRITE) -> Response:
    name = caller.fid(name)
    body = await json_body(request, '{"ids": [...]} (or nothing, for every message)', empty={})
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(body, dict) or (ids is not None and not (
        isinstance(ids, list) and all(isinstance(i, str) for i in ids)
    )):  # fmt: skip
        raise InvalidRequest('the body must be {"ids": ["message id", ...]}, or empty to redrive every message')
    moved = await _queues(request).redrive(name, ids)
    return JSONResponse({"redriven": [{"message_id": r.message_id, "invocation_id": r.invocation_id} for r in moved]})


@router.get("/v1/queues", summary="The mist queues that hold messages")
async def list_queues(request: Request, caller: Caller = READ) -> Response:
    found = await _queues(request).list(caller.tenant)
    return JSONResponse({"queues": [{"name": q.name, "messages": q.messages, "visible": q.visible} for q in found]})


@router.post("/v1/queues/{queue}/receive", summary="Receive messages (hidden for visibility_timeout seconds)")
async def receive(queue: str, request: Request, max: int = 10, visibility_timeout: float = 30.0,
                  caller: Caller = WRITE) -> Response:
    got = await _queues(request).receive(caller.fid(queue, "queue"), limit=max, visibility_s=visibility_timeout)
    return JSONResponse({"messages": [message_json(m) for m in got]})


@router.delete("/v1/queues/{queue}/messages/{message_id}", status_code=204, summary="Delete a received message")
async def delete_message(queue: str, message_id: str, request: Request, caller: Caller = WRITE) -> Response:
    if not await _queues(request).delete(caller.fid(queue, "queue"), [message_id]):
        raise NotFound(f"no message {message_id!r} in queue {queue!r}; it was deleted already, or never there")
    return Response(status_code=204)
