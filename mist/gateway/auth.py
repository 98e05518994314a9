"""Authentication, authorization and auditing at the edge.

`EdgeAuth` (outermost ASGI middleware, see app.py) authenticates the `Authorization: Bearer`
key of every request once, from memory (mist/tenancy/service.py), and puts the Principal in the
scope; an invalid, revoked or expired key is answered 401 right there. Every route then names
the one Action it needs: FastAPI routes with `Depends(allow(Action.X))`, the invocation fast
path with `authorize_scope`; both return a Caller: the principal and the tenant it acts in (its
own, or for admins the `X-Mist-Tenant` header), which resolves every name in the request. A name
of another tenant is therefore never found (404), and says nothing about that tenant.

The middleware also audits (mist/tenancy/audit.py): every request that changes state (any
method but GET/HEAD/OPTIONS; invocations and HTTP triggers, the data plane, excepted) and
every 401 or 403, with the actor, tenant, method and path, status and client address.
`tests/gateway/test_authz_matrix.py` checks every route x role x own/other tenant.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Request

from mist.errors import MistError, Unauthenticated
from mist.gateway.errors import error_response
from mist.tenancy.audit import AuditLog
from mist.tenancy.model import AuditEntry
from mist.tenancy.roles import Action, Caller, Principal, authorize
from mist.tenancy.service import Tenancy

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PRINCIPAL = "mist.principal"  # scope key: the authenticated Principal, or None
TENANT_HEADER = b"x-mist-tenant"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})  # and /fn/...
NO_KEY = (
    "this route needs an API key: send Authorization: Bearer <key>. `mist up` wrote the admin key to "
    "DATA_DIR/admin.key (the mist CLI finds it by itself); `mist key create` makes more"
)


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope["headers"]:
        if k == name:
            return v.decode("latin-1")
    return None


def _data_plane(method: str, path: str) -> bool:
    return path.startswith("/fn/") or (method == "POST" and path.startswith("/v1/functions/")
                                       and path.endswith("/invocations"))


class EdgeAuth:
    def __init__(self, app: ASGIApp, tenancy: Tenancy, audit: AuditLog | None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.app = app
        self.tenancy = tenancy
        self.audit = audit
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        principal: Principal | None = None
        auth = _header(scope, b"authorization")
        if auth is not None:
            scheme, _, token = auth.partition(" ")
            try:
                if scheme.lower() != "bearer" or not token.strip():
                    raise Unauthenticated("the Authorization header must be `Bearer <API key>`")
                principal = self.tenancy.authenticate(token.strip())
            except MistError as exc:
                if not scope["path"].startswith("/fn/"):  # an HTTP trigger may carry its own scheme
                    self._audit(scope, None, 401, exc.message)
                    await error_response(exc)(scope, receive, send)
                    return
        scope[PRINCIPAL] = principal
        method, path = scope["method"], scope["path"]
        if principal is None and path not in PUBLIC_PATHS and not path.startswith("/fn/"):
            # refused before anything reads the body (an upload, say); routes then authorize
            self._audit(scope, None, 401, "no API key")
            await error_response(Unauthenticated(NO_KEY))(scope, receive, send)
            return
        if method in _SAFE or _data_plane(method, path):
            if self.audit is None:
                await self.app(scope, receive, send)
                return

            async def send_refusals(message: Message) -> None:
                if message["type"] == "http.response.start" and message["status"] in (401, 403):
                    self._audit(scope, principal, message["status"])
                await send(message)

            await self.app(scope, receive, send_refusals)
            return

        async def send_audited(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._audit(scope, principal, message["status"])
            await send(message)

        await self.app(scope, receive, send_audited)

    def _audit(self, scope: Scope, principal: Principal | None, status: int, detail: str = "") -> None:
        if self.audit is None:
            return
        client = scope.get("client")
        tenant = (_header(scope, TENANT_HEADER) if principal is not None and principal.is_admin else None) or (
            principal.tenant if principal is not None else "-")
        self.audit.note(AuditEntry(
            ts=self.clock(), tenant=tenant, actor=principal.key_id if principal else "anonymous",
            role=principal.role.value if principal else "-", action=f"{scope['method']} {scope['path']}",
            resource=scope["path"], status=status, source_ip=client[0] if client else "", detail=detail,
        ))  # fmt: skip


def authorize_scope(scope: Scope, action: Action, tenancy: Tenancy) -> Caller:
    """The Caller of a request for `action`: Unauthenticated without a key, Forbidden when its
    role does not allow the action (or it names another tenant without being admin), NotFound
    when an admin names a tenant that does not exist."""
    principal: Principal | None = scope.get(PRINCIPAL)
    if principal is None:
        raise Unauthenticated(NO_KEY)
    caller = authorize(principal, action, _header(scope, TENANT_HEADER))
    if caller.tenant != principal.tenant:
        tenancy.require_tenant(caller.tenant)
    return caller


def allow(action: Action) -> Callable[[Request], Caller]:
    """A FastAPI dependency: `caller: Caller = Depends(allow(Action.FUNCTIONS_READ))`."""

    def dependency(request: Request) -> Caller:
        return authorize_scope(request.scope, action, request.app.state.services.tenancy)

    dependency.action = action  # type: ignore[attr-defined]  # read by the route table test
    return dependency


def principal_of(scope: Scope) -> Principal | None:
    return scope.get(PRINCIPAL)
