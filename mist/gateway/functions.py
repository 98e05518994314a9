"""Management routes: deploy, change, read, list and delete functions."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from starlette.responses import JSONResponse, Response, StreamingResponse

from mist.errors import MistError
from mist.gateway.auth import allow
from mist.gateway.bodies import json_body, parse_json
from mist.gateway.errors import error_body, status_for
from mist.gateway.services import Services
from mist.models import (
    CONCURRENCY_MAX,
    EGRESS_MAX_RULES,
    EVENT_AGE_MAX_S,
    EVENT_AGE_MIN_S,
    HTTP_AUTH_MODES,
    INSTANCES_MAX,
    MEMORY_MAX_MB,
    MEMORY_MIN_MB,
    RETRIES_MAX,
    TIMEOUT_MAX_S,
)
from mist.tenancy.roles import Action, Caller

_DESTINATION = {"type": ["string", "null"], "pattern": "^(function|queue):[a-z0-9][a-z0-9-]{0,62}$"}
CONFIG_SCHEMA = {  # FunctionConfig.from_json (mist/models.py) is what checks it
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "handler": {"type": ["string", "null"], "pattern": r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$",
                    "examples": ["main.handler"]},
        "memory_mb": {"type": "integer", "minimum": MEMORY_MIN_MB, "maximum": MEMORY_MAX_MB},
        "timeout_s": {"type": "number", "exclusiveMinimum": 0, "maximum": TIMEOUT_MAX_S},
        "concurrency": {"type": "integer", "minimum": 1, "maximum": CONCURRENCY_MAX},
        "env": {"type": "object", "additionalProperties": {"type": "string"},
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}},
        "min_instances": {"type": "integer", "minimum": 0, "maximum": INSTANCES_MAX},
        "max_instances": {"type": ["integer", "null"], "minimum": 1, "maximum": INSTANCES_MAX},
        "retries": {"type": "integer", "minimum": 0, "maximum": RETRIES_MAX},
        "max_event_age_s": {"type": "integer", "minimum": EVENT_AGE_MIN_S, "maximum": EVENT_AGE_MAX_S},
        "on_success": _DESTINATION,
        "on_failure": _DESTINATION,
        "http_auth": {"enum": list(HTTP_AUTH_MODES)},
        "network": {"anyOf": [{"const": "none"}, {"type": "null"}, {
            "type": "object", "required": ["egress"], "additionalProperties": False,
            "properties": {"egress": {"type": "array", "minItems": 1, "maxItems": EGRESS_MAX_RULES,
                                      "items": {"type": "string", "examples": ["api.example.com:443"]}}}}]},
    },
}
READ = Depends(allow(Action.FUNCTIONS_READ))
WRITE = Depends(allow(Action.FUNCTIONS_WRITE))

router = APIRouter()


def _parse_config(raw: str | None) -> object:
    if raw is None or not raw.strip():
        return {}
    return parse_json(raw, '{"memory_mb": 256}', "the config part")


@router.post(
    "/v1/functions/{name}/versions",
    status_code=201,
    summary="Deploy: create the function if needed and a new version from a zip",
    responses={422: {"description": "DeployRejected (unsafe zip, syntax error, missing handler) or "
                                    "DependencyInstallFailed; error.detail says what",
                     "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
)
async def deploy(
    name: str,
    request: Request,
    code: Annotated[UploadFile, File(description="zip of the function's directory")],
    config: Annotated[str | None, Form(description="the configuration as a JSON object (the keys of PATCH "
                                               "/v1/functions/{name}'s body); default {}")] = None,
    stream: bool = False,
    caller: Caller = WRITE,
) -> Response:
    services: Services = request.app.state.services
    name = caller.fid(name)
    cfg = _parse_config(config)
    fd, tmp = tempfile.mkstemp(prefix="upload-", suffix=".zip", dir=services.uploads_dir)
    with os.fdopen(fd, "wb") as out:
        await asyncio.to_thread(shutil.copyfileobj, code.file, out, 1 << 20)
    zip_path = services.uploads_dir / os.path.basename(tmp)

    if not stream:
        try:
            fv = await services.functions.deploy(name, cfg, zip_path)
        finally:
            zip_path.unlink(missing_ok=True)
        return JSONResponse(fv.to_json(), status_code=201)

    queue: asyncio.Queue[dict[str, object] | None] = asyncio.Queue()

    async def progress(event: dict[str, object]) -> None:
        await queue.put(event)

    async def run() -> None:
        try:
            await services.functions.deploy(name, cfg, zip_path, progress)
        except MistError as exc:
            await queue.put({"event": "error", "status": status_for(exc), **error_body(exc)})
        except Exception as exc:  # noqa: BLE001 - reported to the client, never swallowed silently
            await queue.put(
                {"event": "error", "status": 500, "error": {"code": "InternalError", "message": repr(exc)}}
            )
        finally:
            zip_path.unlink(missing_ok=True)
            await queue.put(None)

    task = asyncio.create_task(run())

    async def lines() -> AsyncIterator[bytes]:
        try:
            while (event := await queue.get()) is not None:
                yield json.dumps(event).encode() + b"\n"
        finally:
            await task  # the deploy finishes even if the client went away

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.patch("/v1/functions/{name}", status_code=201, summary="Change configuration (creates a new version)",
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                  "schema": CONFIG_SCHEMA, "example": {"memory_mb": 256, "env": {"LOG_LEVEL": "debug"}}}}}})
async def update(name: str, request: Request, caller: Caller = WRITE) -> Response:
    services: Services = request.app.state.services
    name = caller.fid(name)
    cfg = await json_body(request, '{"memory_mb": 256}', empty={})
    fv = await services.functions.update_config(name, cfg)
    return JSONResponse(fv.to_json(), status_code=201)


@router.get("/v1/functions", summary="List functions")
async def list_functions(request: Request, caller: Caller = READ) -> Response:
    services: Services = request.app.state.services
    return JSONResponse({"functions": [f.to_json() for f in await services.functions.list(caller.tenant)]})


@router.get("/v1/functions/{name}", summary="A function and its newest version")
async def get_function(name: str, request: Request, caller: Caller = READ) -> Response:
    services: Services = request.app.state.services
    return JSONResponse((await services.functions.get(caller.fid(name))).to_json())


@router.get("/v1/functions/{name}/versions", summary="A function's versions, newest first")
async def list_versions(name: str, request: Request, caller: Caller = READ) -> Response:
    services: Services = request.app.state.services
    return JSONResponse({"versions": [v.to_json() for v in await services.functions.versions(caller.fid(name))]})


@router.get("/v1/functions/{name}/versions/{version}", summary="One version")
async def get_version(name: str, version: int, request: Request, caller: Caller = READ) -> Response:
    services: Services = request.app.state.services
    return JSONResponse((await services.functions.resolve(caller.fid(name), version)).to_json())


@router.delete("/v1/functions/{name}", status_code=204,
               summary="Delete a function and its triggers (records are kept)")
async def delete_function(name: str, request: Request, caller: Caller = WRITE) -> Response:
    services: Services = request.app.state.services
    name = caller.fid(name)
    await services.functions.delete(name)
    if services.triggers is not None:
        await services.triggers.remove_function(name)  # type: ignore[attr-defined]
    return Response(status_code=204)
