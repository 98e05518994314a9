"""Trigger routes: add, list (with each trigger's live status), show and remove triggers.

A trigger runs a function on an event: an object created or removed in mist's S3 endpoint, a
schedule, or messages on a broker (mist/control/triggers.py, docs/triggers.md).
"""

from __future__ import annotations


from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from mist.control.triggers import S3_EVENTS, TriggerManager
from mist.triggers.schedule import MISSED_POLICIES
from mist.errors import PlatformError
from mist.gateway.auth import allow
from mist.gateway.bodies import json_object
from mist.gateway.services import Services
from mist.tenancy.roles import Action, Caller

READ = Depends(allow(Action.TRIGGERS_READ))
WRITE = Depends(allow(Action.TRIGGERS_WRITE))

router = APIRouter()

_EXAMPLES = {
    "s3": {"value": {"kind": "s3", "bucket": "photos", "events": ["s3:ObjectCreated:*"], "suffix": ".jpg"}},
    "cron": {"value": {"kind": "cron", "cron": "*/5 * * * *", "missed": "skip"}},
    "rate": {"value": {"kind": "cron", "rate": "10 minutes"}},
    "queue": {"value": {"kind": "queue", "source": "redis://127.0.0.1:6379/0", "stream": "orders", "batch_size": 10}},
}


def _triggers(request: Request) -> TriggerManager:
    services: Services = request.app.state.services
    if services.triggers is None:
        raise PlatformError("triggers are not served by this mist")
    return services.triggers  # type: ignore[return-value]


_TRIGGER = {  # mist/control/triggers.py `parse` checks it (docs/triggers.md)
    "oneOf": [
        {"type": "object", "required": ["kind", "bucket"], "additionalProperties": False, "properties": {
            "kind": {"const": "s3"}, "bucket": {"type": "string"}, "prefix": {"type": "string"},
            "suffix": {"type": "string"}, "events": {"type": "array", "items": {"enum": list(S3_EVENTS)}}}},
        {"type": "object", "required": ["kind"], "additionalProperties": False, "properties": {
            "kind": {"const": "cron"}, "cron": {"type": "string"}, "rate": {"type": "string"},
            "missed": {"enum": list(MISSED_POLICIES)}}},
        {"type": "object", "required": ["kind", "source"], "properties": {
            "kind": {"const": "queue"}, "source": {"type": "string", "format": "uri"},
            "batch_size": {"type": "integer", "minimum": 1}, "batch_window_s": {"type": "number", "minimum": 0},
            "max_attempts": {"type": "integer", "minimum": 1}, "format": {"enum": ["lambda", "cloudevents"]}}},
    ],
}


@router.post("/v1/functions/{name}/triggers", status_code=201, summary="Add a trigger to a function",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": _TRIGGER, "examples": _EXAMPLES}}}})
async def add_trigger(name: str, request: Request, caller: Caller = WRITE) -> Response:
    body = await json_object(request, '{"kind": "cron", "rate": "1 day"}')
    view = await _triggers(request).add(caller.fid(name), body)
    return JSONResponse(view.to_json(), status_code=201)


@router.get("/v1/functions/{name}/triggers", summary="A function's triggers and their status")
async def function_triggers(name: str, request: Request, caller: Caller = READ) -> Response:
    services: Services = request.app.state.services
    await services.functions.get(caller.fid(name))  # NotFound, for another tenant's too
    return JSONResponse({"triggers": [v.to_json() for v in _triggers(request).list(caller.fid(name))]})


@router.get("/v1/triggers", summary="Every trigger and its status")
async def list_triggers(request: Request, function: str | None = None, caller: Caller = READ) -> Response:
    fid = caller.fid(function) if function is not None else None
    return JSONResponse({"triggers": [v.to_json() for v in _triggers(request).list(fid, caller.tenant)]})


@router.get("/v1/triggers/{trigger_id}", summary="One trigger and its status")
async def get_trigger(trigger_id: str, request: Request, caller: Caller = READ) -> Response:
    return JSONResponse(_triggers(request).get(trigger_id, caller.tenant).to_json())


@router.delete("/v1/triggers/{trigger_id}", status_code=204, summary="Remove a trigger")
async def remove_trigger(trigger_id: str, request: Request, caller: Caller = WRITE) -> Response:
    triggers = _triggers(request)
    triggers.get(trigger_id, caller.tenant)  # another tenant's trigger: NotFound
    await triggers.remove(trigger_id)
    return Response(status_code=204)
