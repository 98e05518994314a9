"""Billing routes: usage reports, the usage ledger, invoices, price plans, and tenants' plans
and spend caps (mist/metering/service.py; docs/billing.md).

A tenant reads its own usage and invoices (usage:read); an admin reads any tenant's (`tenant=`
or the tenant in the path; without it, every tenant's) and sets plans and spend caps."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from starlette.responses import JSONResponse, Response

from mist.errors import InvalidRequest, NotFound, PlatformError
from mist.gateway.auth import allow
from mist.gateway.services import Services
from mist.metering import reports
from mist.metering.service import BillingService
from mist.metering.usage import parse_time
from mist.tenancy.roles import Action, Caller, check_tenant_name

router = APIRouter()
READ = Depends(allow(Action.USAGE_READ))


def _tenant(caller: Caller, requested: str | None, *, every: bool = True) -> str | None:
    """The tenant a billing read is about: an admin's choice (None: every tenant, where `every`),
    else the caller's own; another tenant's is not found, as everywhere."""
    admin = caller.principal is not None and caller.principal.is_admin
    if requested is None:
        return None if admin and every and caller.tenant == caller.principal.tenant else caller.tenant
    check_tenant_name(requested)
    if not admin and requested != caller.tenant:
        raise NotFound(f"no tenant {requested!r}")
    return requested
FORMATS = ("json", "csv")
TENANT_KEYS = ("plan", "monthly_spend_cap")


def _billing(request: Request) -> BillingService:
    services: Services = request.app.state.services
    if services.billing is None:
        raise PlatformError("metering is not served here; this server keeps no usage ledger")
    return services.billing  # type: ignore[return-value]


def _format(request: Request) -> str:
    fmt = request.query_params.get("format", "json")
    if fmt not in FORMATS:
        raise InvalidRequest(f"format must be json or csv, got {fmt!r}")
    return fmt


def _period(request: Request) -> tuple[float | None, float | None]:
    q = request.query_params
    return tuple(parse_time(k, q[k]) if q.get(k) else None for k in ("from", "to"))  # type: ignore[return-value]


def _csv(text: str, filename: str) -> Response:
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})  # fmt: skip


@router.get("/v1/usage", summary="Usage totals per function, UTC day or UTC hour (JSON or CSV)")
async def usage(request: Request, caller: Caller = READ) -> Response:
    q = request.query_params
    start, end = _period(request)
    fmt = _format(request)
    report = await _billing(request).usage(_tenant(caller, q.get("tenant")), start, end, q.get("by", "function"))
    if fmt == "csv":
        return _csv(reports.usage_csv(report), f"usage-by-{report['by']}.csv")
    return JSONResponse(report)


@router.get("/v1/usage/records", summary="The usage ledger: one record per attempt or provisioned span, by id")
async def usage_records(request: Request, limit: int = 1000, caller: Caller = READ) -> Response:
    q = request.query_params
    start, end = _period(request)
    found = await _billing(request).records(_tenant(caller, q.get("tenant")), start, end, after=q.get("after"), limit=limit)
    return JSONResponse({"records": [r.to_json() for r in found],
                         "next": found[-1].id if len(found) == limit else None})  # fmt: skip


@router.get("/v1/usage/records/{record_id}", summary="One usage record (an attempt's id)")
async def usage_record(record_id: str, request: Request, caller: Caller = READ) -> Response:
    found = await _billing(request).record(record_id)
    admin = caller.principal is not None and caller.principal.is_admin
    if found is None or not (admin or found.tenant == caller.tenant):
        raise NotFound(f"no usage record {record_id!r}: no attempt with this id ran (or it is not a usage record id)")
    return JSONResponse(found.to_json())


@router.get("/v1/invoices/{tenant}/{month}", summary="A tenant's invoice for a month (YYYY-MM), JSON or CSV")
async def get_invoice(tenant: str, month: str, request: Request, caller: Caller = READ) -> Response:
    _tenant(caller, tenant)
    fmt = _format(request)
    doc = await _billing(request).invoice(tenant, month)
    if fmt == "csv":
        return _csv(reports.invoice_csv(doc), f"invoice-{tenant}-{month}.csv")
    return JSONResponse(doc)


@router.get("/v1/plans", summary="The price plans and the default plan")
async def list_plans(request: Request, caller: Caller = READ) -> Response:
    return JSONResponse(_billing(request).plans())


@router.get("/v1/billing/tenants", summary="Tenants' plans, spend caps and month to date")
async def list_tenants(request: Request, caller: Caller = Depends(allow(Action.TENANTS_MANAGE))) -> Response:
    found = await _billing(request).tenants()
    return JSONResponse({"tenants": [t.to_json() for t in found]})


@router.get("/v1/billing/tenants/{tenant}", summary="A tenant's plan, spend cap and month to date")
async def get_tenant(tenant: str, request: Request, caller: Caller = READ) -> Response:
    _tenant(caller, tenant)
    return JSONResponse(_billing(request).tenant(tenant).to_json())


@router.put("/v1/billing/tenants/{tenant}", summary="Set a tenant's plan and/or monthly spend cap")
async def set_tenant(tenant: str, request: Request, caller: Caller = Depends(allow(Action.TENANT_LIMITS))) -> Response:
    check_tenant_name(tenant)
    raw = await request.body()
    try:
        body = json.loads(raw) if raw.strip() else None
    except ValueError as exc:
        raise InvalidRequest(f"the body is not JSON ({exc})") from None
    if not isinstance(body, dict) or not body or set(body) - set(TENANT_KEYS):
        raise InvalidRequest('the body must be a JSON object with plan and/or monthly_spend_cap, e.g. '
                             '{"plan": "pro", "monthly_spend_cap": "100.00"} (null: the default)')  # fmt: skip
    plan = body.get("plan", ...)
    if plan is not ... and plan is not None and not isinstance(plan, str):
        raise InvalidRequest(f"plan must be a plan's name or null (the default plan), got {plan!r}")
    changes = {k: v for k, v in (("plan", plan), ("cap", body.get("monthly_spend_cap", ...))) if v is not ...}
    spend = await _billing(request).set_tenant(tenant, **changes)
    return JSONResponse(spend.to_json())
