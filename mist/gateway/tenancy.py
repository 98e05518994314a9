"""Tenancy routes: who am I, tenants and their limits (admin), API keys, the audit log."""

from __future__ import annotations

import math
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from mist.errors import Forbidden, InvalidRequest
from mist.gateway.auth import allow
from mist.gateway.bodies import json_object
from mist.gateway.services import Services
from mist.tenancy.roles import Action, Caller, Role
from mist.tenancy.service import Tenancy

router = APIRouter()
AUDIT_MAX = 10_000


def _tenancy(request: Request) -> Tenancy:
    services: Services = request.app.state.services
    return services.tenancy


TIME_MAX = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()  # what a datetime can show


def _time(key: str, value: object) -> float | None:
    """An ISO 8601 time or seconds since the epoch, as epoch seconds (from 1970 to 9999: a time
    mist stores must convert back to a date, or every listing that shows it would fail)."""
    if value is None:
        return None
    ts: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        ts = float(value)
    elif isinstance(value, str):
        try:
            ts = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError):
            pass
    if ts is not None and 0 <= ts <= TIME_MAX:
        return ts
    raise InvalidRequest(f"{key} must be an ISO 8601 time (e.g. 2026-12-31T00:00:00Z) or epoch seconds, "
                         f"from 1970 to 9999, got {value[:80] if isinstance(value, str) else value!r}")


@router.get("/v1/whoami", summary="The caller: its key id, tenant, role, and the tenant's limits")
async def whoami(request: Request, caller: Caller = Depends(allow(Action.SELF_READ))) -> Response:
    assert caller.principal is not None
    p = caller.principal
    tenant = _tenancy(request).require_tenant(caller.tenant)
    return JSONResponse({"key_id": p.key_id, "name": p.name, "role": p.role.value, "key_tenant": p.tenant,
                         "tenant": tenant.to_json()})


# -- tenants (admin) ---------------------------------------------------------------------------

MANAGE_TENANTS = Depends(allow(Action.TENANTS_MANAGE))


@router.get("/v1/tenants", summary="Every tenant and its limits (admin)")
async def list_tenants(request: Request, caller: Caller = MANAGE_TENANTS) -> Response:
    tenants = sorted(_tenancy(request).tenants(), key=lambda t: t.name)
    return JSONResponse({"tenants": [t.to_json() for t in tenants]})


_NAME = {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"}
_LIMITS = {  # TenantLimits.from_json (mist/tenancy/model.py) checks them; null clears one
    "type": "object", "additionalProperties": False,
    "properties": {"rate_per_s": {"type": ["number", "null"], "exclusiveMinimum": 0},
                   "burst": {"type": ["integer", "null"], "minimum": 1},
                   "max_concurrency": {"type": ["integer", "null"], "minimum": 1},
                   "max_queued": {"type": ["integer", "null"], "minimum": 0},
                   "weight": {"type": "integer", "minimum": 1}},
}


def _body(schema: dict, example: dict) -> dict:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema, "example": example}}}}


_TENANT_EXAMPLE = {"name": "acme", "limits": {"rate_per_s": 100, "burst": 200, "max_concurrency": 50}}


@router.post("/v1/tenants", status_code=201, summary="Create a tenant (admin)", openapi_extra=_body({
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {"name": _NAME, "limits": _LIMITS}}, _TENANT_EXAMPLE))
async def create_tenant(request: Request, caller: Caller = MANAGE_TENANTS) -> Response:
    body = await json_object(request, '{"name": "acme"}')
    unknown = sorted(set(body) - {"name", "limits"})
    if unknown:
        raise InvalidRequest(f"unknown field(s) {', '.join(unknown)}; send name and optionally limits")
    tenant = await _tenancy(request).create_tenant(body.get("name"), body.get("limits"))
    return JSONResponse(tenant.to_json(), status_code=201)


@router.get("/v1/tenants/{name}", summary="One tenant and its limits (admin)")
async def get_tenant(name: str, request: Request, caller: Caller = MANAGE_TENANTS) -> Response:
    return JSONResponse(_tenancy(request).require_tenant(name).to_json())


@router.patch("/v1/tenants/{name}/limits", summary="Change a tenant's limits; null clears one (admin)",
              openapi_extra=_body(_LIMITS, {"rate_per_s": 50, "max_queued": None}))
async def set_limits(name: str, request: Request, caller: Caller = Depends(allow(Action.TENANT_LIMITS))) -> Response:
    body = await json_object(request, '{"rate_per_s": 50}')
    return JSONResponse((await _tenancy(request).set_limits(name, body)).to_json())


@router.delete("/v1/tenants/{name}", status_code=204,
               summary="Delete a tenant that has no functions left, and revoke its keys (admin)")
async def delete_tenant(name: str, request: Request, caller: Caller = MANAGE_TENANTS) -> Response:
    services: Services = request.app.state.services

    async def has_functions(tenant: str) -> bool:
        return bool(await services.functions.list(tenant))

    await _tenancy(request).delete_tenant(name, has_functions)
    return Response(status_code=204)


# -- API keys ----------------------------------------------------------------------------------

MANAGE_KEYS = Depends(allow(Action.KEYS_MANAGE))


@router.post("/v1/keys", status_code=201, summary="Create an API key in the tenant; the key is shown only now",
             openapi_extra=_body({"type": "object", "required": ["role"], "additionalProperties": False, "properties": {
                 "role": {"enum": [r.value for r in Role]}, "name": {"type": "string", "maxLength": 200},
                 "expires_at": {"anyOf": [{"type": "string", "format": "date-time"}, {"type": "number"},
                                          {"type": "null"}]}}},
                 {"role": "developer", "name": "ci deploys", "expires_at": "2027-06-30T00:00:00Z"}))
async def create_key(request: Request, caller: Caller = MANAGE_KEYS) -> Response:
    body = await json_object(request, '{"role": "developer"}')
    unknown = sorted(set(body) - {"role", "name", "expires_at"})
    if unknown:
        raise InvalidRequest(f"unknown field(s) {', '.join(unknown)}; send role, and optionally name and expires_at")
    tenancy = _tenancy(request)
    key, secret = await tenancy.create_key(caller, body.get("role"), body.get("name", ""),
                                           _time("expires_at", body.get("expires_at")))
    return JSONResponse({**key.to_json(tenancy.now()), "key": secret}, status_code=201)


@router.get("/v1/keys", summary="The tenant's API keys (ids, roles, states; never the keys themselves)")
async def list_keys(request: Request, all: bool = False, caller: Caller = MANAGE_KEYS) -> Response:  # noqa: A002
    if all and not (caller.principal and caller.principal.is_admin):
        raise Forbidden("only admin keys may list the keys of every tenant; leave out all=true")
    tenancy = _tenancy(request)
    now = tenancy.now()
    return JSONResponse({"keys": [k.to_json(now) for k in tenancy.list_keys(None if all else caller.tenant)]})


@router.delete("/v1/keys/{key_id}", summary="Revoke an API key of the tenant (it stops working at once)")
async def revoke_key(key_id: str, request: Request, caller: Caller = MANAGE_KEYS) -> Response:
    tenancy = _tenancy(request)
    key = await tenancy.revoke_key(caller.tenant, key_id)
    return JSONResponse(key.to_json(tenancy.now()))


# -- audit -------------------------------------------------------------------------------------

@router.get("/v1/audit", summary="Audited requests of the tenant, newest first (writes and refusals)")
async def audit(request: Request, since: str | None = None, until: str | None = None, limit: int = 100,
                all: bool = False, caller: Caller = Depends(allow(Action.AUDIT_READ))) -> Response:  # noqa: A002
    services: Services = request.app.state.services
    if all and not (caller.principal and caller.principal.is_admin):
        raise Forbidden("only admin keys may read every tenant's audit log; leave out all=true")
    start, end = _time("since", _number_or_text(since)), _time("until", _number_or_text(until))
    if services.audit is None:
        return JSONResponse({"entries": []})
    entries = await services.audit.query(
        tenant=None if all else caller.tenant, since=start, until=end, limit=max(1, min(limit, AUDIT_MAX)),
    )  # fmt: skip
    return JSONResponse({"entries": [e.to_json() for e in entries]})


def _number_or_text(value: str | None) -> object:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value
