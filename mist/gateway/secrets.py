"""Secret routes: list a function's secrets (names and times, never values), set and remove them.

A change restarts the function's instances (docs/secrets.md). Values arrive only in a request
body: never in a path or a query string, which the audit log and proxies record.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from mist.gateway.auth import allow
from mist.gateway.bodies import json_body
from mist.gateway.services import Services
from mist.secrets.model import PER_FUNCTION_MAX, VALUE_MAX
from mist.secrets.redact import MIN_LENGTH
from mist.tenancy.roles import Action, Caller

READ = Depends(allow(Action.SECRETS_READ))
WRITE = Depends(allow(Action.SECRETS_WRITE))
BODY_MAX = PER_FUNCTION_MAX * (VALUE_MAX + 1024)

router = APIRouter()

_NAME = {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$", "maxLength": 128}
_PATCH = {
    "type": "object",
    "minProperties": 1,
    "maxProperties": PER_FUNCTION_MAX,
    "propertyNames": _NAME,
    "additionalProperties": {"anyOf": [{"type": "string", "maxLength": VALUE_MAX}, {"type": "null"}]},
    "description": "Names to values: a string sets the secret (a new value replaces the old), null removes it. "
                   "Names are environment variable names without the prefixes AWS_, LAMBDA_, MIST_.",
}
_INFO = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "updated_at": {"type": "string", "format": "date-time"},
                   "readable": {"type": "boolean"}},
}
_LIST = {"type": "object", "properties": {"secrets": {"type": "array", "items": _INFO}}}


@router.get("/v1/functions/{name}/secrets", summary="A function's secrets: names and times, never values",
            responses={200: {"content": {"application/json": {"schema": _LIST}}}})
async def list_secrets(name: str, request: Request, caller: Caller = READ) -> Response:
    services: Services = request.app.state.services
    found = await services.functions.list_secrets(caller.fid(name))
    return JSONResponse({"secrets": [s.to_json() for s in found]})


@router.patch(
    "/v1/functions/{name}/secrets",
    summary="Set and remove secrets (a JSON merge patch: null removes); restarts the function's instances",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": _PATCH, "example": {"DB_PASSWORD": "correct horse battery staple", "OLD_TOKEN": None}}}}},
    responses={200: {"content": {"application/json": {"schema": _LIST}}}},
)
async def change_secrets(name: str, request: Request, caller: Caller = WRITE) -> Response:
    services: Services = request.app.state.services
    fid = caller.fid(name)
    patch = await json_body(request, '{"NAME": "value", ...}', limit=BODY_MAX)
    found = await services.functions.change_secrets(fid, patch)
    assert isinstance(patch, dict)  # change_secrets refused anything else
    short = sorted(n for n, v in patch.items() if isinstance(v, str) and len(v) < MIN_LENGTH)
    body: dict[str, object] = {"secrets": [s.to_json() for s in found]}
    if short:
        body["warnings"] = [f"the value of {n} is shorter than {MIN_LENGTH} characters: it is not masked in "
                            "logs (masking so short a text would mangle them)" for n in short]
    return JSONResponse(body)


@router.delete("/v1/functions/{name}/secrets/{secret}", status_code=204,
               summary="Remove a secret; restarts the function's instances")
async def remove_secret(name: str, secret: str, request: Request, caller: Caller = WRITE) -> Response:
    services: Services = request.app.state.services
    await services.functions.change_secrets(caller.fid(name), {secret: None})
    return Response(status_code=204)
