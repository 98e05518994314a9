"""S3 access key routes: create (the secret is shown once), list (no secrets), delete.

The keys sign requests to the S3 endpoint (`mist up --s3-port`, docs/s3.md); a deleted key
stops working at once.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from mist.errors import PlatformError
from mist.gateway.auth import allow
from mist.gateway.services import Services
from mist.s3 import ObjectStore
from mist.tenancy.roles import Action, Caller

MANAGE = Depends(allow(Action.KEYS_MANAGE))

router = APIRouter()


def _objects(request: Request) -> ObjectStore:
    services: Services = request.app.state.services
    if services.objects is None:
        raise PlatformError("object storage is not served here; start mist up with an --s3-port other than 0")
    return services.objects  # type: ignore[return-value]


@router.post("/v1/s3/keys", status_code=201, summary="Create an S3 access key; its secret is shown only now")
async def create_key(request: Request, caller: Caller = MANAGE) -> Response:
    key = await asyncio.to_thread(_objects(request).keys.create, caller.tenant)
    return JSONResponse(key.to_json(), status_code=201)


@router.get("/v1/s3/keys", summary="The S3 access keys (ids and creation times, never secrets)")
async def list_keys(request: Request, caller: Caller = MANAGE) -> Response:
    keys = await asyncio.to_thread(_objects(request).keys.list, caller.tenant)
    return JSONResponse({"keys": [k.to_json() for k in keys]})


@router.delete("/v1/s3/keys/{access_key_id}", status_code=204, summary="Delete an S3 access key")
async def delete_key(access_key_id: str, request: Request, caller: Caller = MANAGE) -> Response:
    await asyncio.to_thread(_objects(request).keys.delete, access_key_id, caller.tenant)
    return Response(status_code=204)
