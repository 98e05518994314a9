"""Log routes: a function's log lines as NDJSON, optionally followed live."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from starlette.responses import StreamingResponse

from mist.gateway.auth import allow
from mist.gateway.services import Services
from mist.tenancy.roles import Action, Caller

router = APIRouter()
KEEPALIVE_S = 15.0


@router.get("/v1/functions/{name}/logs", summary="A function's log lines (NDJSON), optionally followed")
async def function_logs(
    name: str,
    request: Request,
    invocation_id: str | None = None,
    limit: int = 200,
    follow: bool = False,
    caller: Caller = Depends(allow(Action.INVOCATIONS_READ)),
) -> StreamingResponse:
    services: Services = request.app.state.services
    name = caller.fid(name)
    await services.functions.get(name)
    limit = max(1, min(limit, 10_000))
    queue = services.records.follow(name) if follow else None  # subscribe first: no gap
    history = await services.records.logs(name, invocation_id=invocation_id, limit=limit)

    async def lines() -> AsyncIterator[bytes]:
        try:
            seen = {(l.invocation_id, l.ts, l.text) for l in history}
            for line in history:
                yield json.dumps(line.to_json()).encode() + b"\n"
            if queue is None:
                return
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_S):  # not wait_for: it can lose a cancel (3.11)
                        line = await queue.get()
                except TimeoutError:
                    yield b"\n"
                    continue
                if invocation_id is not None and line.invocation_id != invocation_id:
                    continue
                if (line.invocation_id, line.ts, line.text) in seen:
                    continue
                yield json.dumps(line.to_json()).encode() + b"\n"
        finally:
            if queue is not None:
                services.records.unfollow(name, queue)

    return StreamingResponse(lines(), media_type="application/x-ndjson")
