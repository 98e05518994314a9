"""The Gateway: mist's whole HTTP request path, assembled in `build_app`.

A request goes, outermost first:
  1. uvicorn (HTTP/1.1 parsing, keep-alive)                              mist/server.py
  1a. authentication: the Bearer API key -> a Principal (from memory); no key or a bad one is
      answered 401 here, before the body is read (but /healthz, /docs, /openapi.json and the
      HTTP trigger); writes and refusals are audited          mist/gateway/auth.py, tenancy/
  1b. the invocation fast path: `POST /v1/functions/{n}/invocations` is served right here as
      raw ASGI, skipping FastAPI (its routing costs a third of the gateway's CPU per call)
                                                                         mist/gateway/fastpath.py
  2. exception handlers: every MistError -> status + JSON body            mist/gateway/errors.py
     (FastAPI's own 404/405/422 are reshaped into the same error body)
  3. the route, which names the one Action it needs (`Depends(allow(Action.X))`): the role must
     allow it, and every name is resolved inside the caller's tenant (another tenant's: 404):
       /healthz                          readiness
       /v1/functions... (management)     mist/gateway/functions.py -> control/functions.py
       /v1/functions/{n}/invocations     mist/gateway/invoke.py    -> control/invocations.py -> worker
       /v1/invocations/{id}              mist/gateway/invoke.py    -> control/events.py, records.py
       /v1/functions/{n}/dlq, /v1/queues mist/gateway/queues.py    -> control/queues.py
       /v1/functions/{n}/logs            mist/gateway/logs.py      -> control/records.py
       /v1/functions/{n}/secrets         mist/gateway/secrets.py   -> control/functions.py -> secrets/
       /v1/s3/keys                       mist/gateway/s3keys.py    -> s3/keys.py
       /v1/triggers, /v1/functions/{n}/triggers  mist/gateway/triggers.py -> control/triggers.py
       /v1/whoami, /v1/tenants, /v1/keys, /v1/audit   mist/gateway/tenancy.py -> tenancy/
       /fn/{n}[.{tenant}]/{path}  (HTTP trigger, public or key)  mist/gateway/invoke.py -> core/httpevent.py
       /v1/usage, /v1/invoices, /v1/plans, /v1/billing  mist/gateway/usage.py -> metering/service.py
There is no other middleware: nothing runs on the hot path that is not listed here.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from mist import __version__
from mist.cluster.pg import lost_postgresql, unavailable
from mist.errors import MistError
from mist.gateway import functions, invoke, logs, openapi, queues, s3keys, secrets, tenancy, triggers, usage
from mist.gateway.auth import EdgeAuth, allow
from mist.gateway.errors import error_response, plain_error
from mist.gateway.fastpath import InvokeFastPath
from mist.gateway.services import Services
from mist.tenancy.roles import Action


def build_app(services: Services, *, fast_path: bool = True) -> Any:
    """The ASGI app. `fast_path=False` serves invocations through FastAPI too (same behaviour)."""
    app = FastAPI(
        title="mist",
        version=__version__,
        description="Deploy Python functions and invoke them in isolated sandboxes. See docs/api.md.",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = services

    # 2. errors -> status codes, in one place
    app.add_exception_handler(MistError, _mist_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(OperationalError, _database_error)  # the cluster's PostgreSQL lost: 503
    app.add_exception_handler(InterfaceError, _database_error)

    # 3. routes
    app.add_api_route("/healthz", _healthz, methods=["GET"], summary="Readiness")
    app.add_api_route("/v1/statistics", _statistics, methods=["GET"], summary="Component statistics (admin)",
                      dependencies=[Depends(allow(Action.STATISTICS_READ))])
    app.include_router(functions.router)
    app.include_router(invoke.router)
    app.include_router(logs.router)
    app.include_router(queues.router)
    app.include_router(s3keys.router)
    app.include_router(secrets.router)
    app.include_router(triggers.router)
    app.include_router(tenancy.router)
    app.include_router(usage.router)
    openapi.install(app)  # /openapi.json says what the routes really take and answer

    # 1b. the invocation fast path
    inner = InvokeFastPath(app, services) if fast_path else app
    # 1a. authentication (and the audit log), outermost: every request, before its body is read
    return EdgeAuth(inner, services.tenancy, services.audit)


async def _healthz() -> Response:
    return JSONResponse({"status": "ok"})


async def _statistics(request: Request) -> Response:
    stats = request.app.state.services.statistics
    return JSONResponse(stats() if callable(stats) else {})


async def _mist_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, MistError)
    return error_response(exc)


async def _database_error(_: Request, exc: Exception) -> Response:
    if not lost_postgresql(exc):
        raise exc  # mist's own SQL, or SQLite: an internal error
    assert isinstance(exc, (OperationalError, InterfaceError))
    return error_response(unavailable(exc, "the state database (mist up --db)"))


async def _validation_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()
    )
    return plain_error(400, "InvalidRequest", f"invalid request: {problems}")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return plain_error(404, "NotFound", f"no route {request.method} {request.url.path}; see /docs or docs/api.md")
    if exc.status_code == 405:
        return plain_error(405, "MethodNotAllowed", f"{request.method} is not allowed on {request.url.path}")
    return plain_error(exc.status_code, "HTTPError", str(exc.detail))
