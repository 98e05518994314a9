"""The control plane's cluster API, what worker agents call (its own port, its own token).

    POST /v1/cluster/workers                  register -> {incarnation, interval_s, floors}
    POST /v1/cluster/workers/{id}/heartbeat   -> {accepted, floors}
    POST /v1/cluster/workers/{id}/drain       it takes nothing new from now on
    POST /v1/cluster/workers/{id}/leave       a clean exit (its incarnation in the body)
    GET  /v1/cluster/code/{sha}               a version's code zip (the worker checks the sha)
    GET  /v1/cluster/layers/{key}             a dependency layer as a tar (X-Mist-Sha256)
    GET  /healthz                             200 once serving (no token: for load balancers and
                                              `mist up --role scheduler`, which has no public API)
    POST /v1/cluster/place                    another scheduler forwards an invocation of a shard
                                              this one owns (an order's body; the result's answer;
                                              409 NotShardOwner when the map gave the shard away)

Every other request must carry `Authorization: Bearer <cluster token>`; this API is not the tenants'
API (their keys do not open it) and belongs on the cluster's private network.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from mist.cluster import wire
from mist.cluster.codecache import layer_archive
from mist.cluster.scheduler import Scheduler
from mist.errors import MistError, NotShardOwner

_NOWHERE = Path("/nonexistent/forwarded")  # a forwarded spec names code and layer by sha only

_SHA = re.compile(r"[0-9a-f]{64}")


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def build_cluster_app(scheduler: Scheduler, token: str, code_root: Path, layer_root: Path,
                      archive_root: Path, blobs: Any | None = None,
                      statistics: Callable[[], dict[str, Any]] | None = None) -> Starlette:
    """`blobs` (the cluster database's code blobs, mist/control/blobs.py): where code deployed
    through another process is found when this one never ran it. `statistics`: what
    `GET /v1/cluster/statistics` answers (the whole process's components; by default the
    scheduler's alone), the one place a `--role scheduler`, which has no public API, shows them."""
    archive_root.mkdir(parents=True, exist_ok=True)
    locks: dict[str, asyncio.Lock] = {}

    def guard(handler):
        async def checked(request: Request) -> Response:
            if not wire.token_ok(request.headers.get(wire.TOKEN_HEADER), token):
                return _error(401, "Unauthenticated", "the cluster token is missing or wrong: pass the control "
                              "plane's --cluster-token to mist worker (--token or MIST_CLUSTER_TOKEN)")
            try:
                return await handler(request)
            except MistError as exc:
                return _error(503, exc.code, exc.message)
            except (KeyError, TypeError, ValueError) as exc:
                return _error(400, "InvalidRequest", f"malformed cluster request ({exc!r})")
        return checked

    async def register(request: Request) -> Response:
        return JSONResponse(await scheduler.register(await request.json()))

    async def heartbeat(request: Request) -> Response:
        return JSONResponse(await scheduler.heartbeat(request.path_params["worker"], await request.json()))

    async def drain(request: Request) -> Response:
        return JSONResponse({"draining": await scheduler.drain(request.path_params["worker"])})

    async def leave(request: Request) -> Response:
        body = await request.json()
        return JSONResponse({"left": await scheduler.leave(request.path_params["worker"], int(body["incarnation"]))})

    async def code(request: Request) -> Response:
        sha = request.path_params["sha"]
        archive = code_root / f"{sha}.zip"
        if _SHA.fullmatch(sha) and not archive.is_file() and blobs is not None:
            data = await asyncio.to_thread(blobs.get_blob, "code", sha)
            if data is not None and hashlib.sha256(data).hexdigest() == sha:
                return Response(data, media_type="application/zip")
        if not _SHA.fullmatch(sha) or not archive.is_file():
            return _error(404, "NotFound", f"no code archive {sha[:64]}: it was deployed before the control plane "
                          "kept archives, or deleted; deploy the function again")
        return FileResponse(archive, media_type="application/zip")

    async def layer(request: Request) -> Response:
        key = request.path_params["key"]
        if not _SHA.fullmatch(key) or not (layer_root / key / "python").is_dir():
            return _error(404, "NotFound", f"no dependency layer {key[:64]}")
        tar = archive_root / f"{key}.tar"
        async with locks.setdefault(key, asyncio.Lock()):
            if not tar.is_file():
                data = await asyncio.to_thread(layer_archive, layer_root / key)
                tmp = tar.with_suffix(".tmp")
                tmp.write_bytes(data)
                tmp.rename(tar)
        data = await asyncio.to_thread(tar.read_bytes)
        return Response(data, media_type="application/x-tar",
                        headers={"X-Mist-Sha256": hashlib.sha256(data).hexdigest()})

    async def place(request: Request) -> Response:
        head, payload = wire.unframe(await request.body())
        d = head["spec"]
        spec = wire.spec_from_json(d, _NOWHERE / d["code"], _NOWHERE / d["layer"] / "python" if d["layer"] else None)
        try:
            result = await scheduler.place(spec, str(head["invocation_id"]), payload)
        except MistError as exc:
            status = 409 if isinstance(exc, NotShardOwner) else wire.error_status(exc)
            return JSONResponse(wire.error_json(exc), status_code=status)
        return Response(wire.encode_result(result), media_type="application/octet-stream")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def stats(request: Request) -> Response:
        return JSONResponse(statistics() if statistics is not None else {"Scheduler": asdict(scheduler.statistics())})

    return Starlette(routes=[
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/cluster/statistics", guard(stats), methods=["GET"]),
        Route("/v1/cluster/place", guard(place), methods=["POST"]),
        Route("/v1/cluster/workers", guard(register), methods=["POST"]),
        Route("/v1/cluster/workers/{worker}/heartbeat", guard(heartbeat), methods=["POST"]),
        Route("/v1/cluster/workers/{worker}/drain", guard(drain), methods=["POST"]),
        Route("/v1/cluster/workers/{worker}/leave", guard(leave), methods=["POST"]),
        Route("/v1/cluster/code/{sha}", guard(code), methods=["GET"]),
        Route("/v1/cluster/layers/{key}", guard(layer), methods=["GET"]),
    ])
