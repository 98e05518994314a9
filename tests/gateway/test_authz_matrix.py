"""The authorization matrix: every route x every role x own / other tenant x no key, each with the
exact status expected.

Tenant `acme` holds the keys under test (one per role, and the default tenant's admin); tenant
`globex` owns resources of the same kinds. "own" requests name acme's resources, "other" requests
name globex's: a role that may do the action gets the success status for its own and 404 for the
other tenant's (names never leak, so never 403); a role that may not gets 403 both times, without
the resource being looked at. No key: 401, except for the public routes. Every route of the app
must appear in ROUTES, so a route added without a row here fails this test.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from mist.control.batching import SerialWriter
from mist.control.dispatcher import Dispatcher, DispatcherConfig
from mist.control.events import EventService
from mist.control.functions import FunctionService
from mist.control.invocations import InvocationService
from mist.control.layers import LayerStore
from mist.control.queues import QueueService
from mist.control.records import InvocationLog
from mist.control.triggers import (
    MemoryTriggerStore,
    TriggerManager,
    dead_letter_queue,
    invoker,
)
from mist.core.retry import Backoff
from mist.gateway.app import build_app
from mist.gateway.services import Services
from mist.metering.journal import Journal
from mist.metering.ledger import Ledger
from mist.metering.meter import Meter
from mist.metering.plans import BillingConfig
from mist.metering.service import BillingService
from mist.s3 import ObjectStore
from mist.tenancy.audit import AuditLog
from mist.tenancy.roles import ROLE_ACTIONS, Action, Caller, Principal, Role
from mist.tenancy.service import Tenancy
from mist.testing.secrets import memory_secrets
from mist.testing.stores import MemoryStore
from mist.testing.tenancy import MemoryTenantStore
from mist.testing.worker import FakeWorker
from tests.gateway.conftest import make_zip

HELLO = {"main.py": "def handler(event, context):\n    return {'ok': True}\n"}
MONTH = time.strftime("%Y-%m", time.gmtime())
A = Action


@dataclass
class World:
    """The app, a key per role in acme, and the ids of acme's ("own") and globex's ("other") resources."""

    client: httpx.AsyncClient
    keys: dict[str, str]
    tmp: Path
    ids: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # with {fn}, {inv}, {trigger}, {msg}, {key}, {tenant}, {queue}, {s3key} filled per side
    action: Action | None  # None: public
    ok: int  # the success status for the own side
    other: int = 404  # what an allowed role gets for the other tenant's resource
    body: object = None
    headers: tuple[tuple[str, str], ...] = ()
    files: bool = False  # a deploy (multipart)
    template: str = ""  # the app route's path when `path` differs (for the coverage check)
    admin_any: bool = False  # an admin reads the other tenant's too (billing: admins see every tenant)
    methods: tuple[str, ...] = ()  # HTTP trigger: every method of the route


TRIGGER_BODY = {"kind": "cron", "rate": "1 day"}
ROUTES = [
    Route("GET", "/healthz", None, 200, other=200),
    Route("GET", "/openapi.json", None, 200, other=200),
    Route("GET", "/docs", None, 200, other=200),
    Route("GET", "/v1/statistics", A.STATISTICS_READ, 200, other=200),
    Route("GET", "/v1/whoami", A.SELF_READ, 200, other=200),
    Route("PATCH", "/v1/functions/{fn}", A.FUNCTIONS_WRITE, 201, body={"memory_mb": 256}),
    Route("GET", "/v1/functions", A.FUNCTIONS_READ, 200, other=200),
    Route("GET", "/v1/functions/{fn}", A.FUNCTIONS_READ, 200),
    Route("GET", "/v1/functions/{fn}/versions", A.FUNCTIONS_READ, 200),
    Route("GET", "/v1/functions/{fn}/versions/1", A.FUNCTIONS_READ, 200,
          template="/v1/functions/{name}/versions/{version}"),
    Route("POST", "/v1/functions/{fn}/invocations", A.FUNCTIONS_INVOKE, 200, body={"x": 1}),
    Route("POST", "/v1/functions/{fn}/invocations", A.FUNCTIONS_INVOKE, 202, body={"x": 1},
          headers=(("X-Mist-Invocation-Type", "Event"),)),
    Route("GET", "/v1/functions/{fn}/invocations", A.INVOCATIONS_READ, 200),
    Route("GET", "/v1/invocations/{inv}", A.INVOCATIONS_READ, 200),
    Route("GET", "/v1/functions/{fn}/logs", A.INVOCATIONS_READ, 200),
    Route("GET", "/v1/functions/{fn}/dlq", A.QUEUES_READ, 200),
    Route("GET", "/v1/functions/{fn}/dlq/{msg}", A.QUEUES_READ, 200),
    Route("POST", "/v1/functions/{fn}/dlq/redrive", A.QUEUES_WRITE, 200, body={}),
    Route("GET", "/v1/queues", A.QUEUES_READ, 200, other=200),
    Route("POST", "/v1/queues/{queue}/receive", A.QUEUES_WRITE, 200, other=200),
    Route("DELETE", "/v1/queues/{queue}/messages/{qmsg}", A.QUEUES_WRITE, 204),
    Route("POST", "/v1/s3/keys", A.KEYS_MANAGE, 201, other=201),
    Route("GET", "/v1/s3/keys", A.KEYS_MANAGE, 200, other=200),
    Route("DELETE", "/v1/s3/keys/{s3key}", A.KEYS_MANAGE, 204),
    Route("POST", "/v1/functions/{fn}/triggers", A.TRIGGERS_WRITE, 201, body=TRIGGER_BODY),
    Route("GET", "/v1/functions/{fn}/triggers", A.TRIGGERS_READ, 200),
    Route("GET", "/v1/triggers", A.TRIGGERS_READ, 200, other=200),
    Route("GET", "/v1/triggers/{trigger}", A.TRIGGERS_READ, 200),
    Route("DELETE", "/v1/triggers/{trigger}", A.TRIGGERS_WRITE, 204),
    Route("GET", "/v1/tenants", A.TENANTS_MANAGE, 200, other=200),
    Route("POST", "/v1/tenants", A.TENANTS_MANAGE, 201, other=201, body={"name": "{newtenant}"}),
    Route("GET", "/v1/tenants/{tenant}", A.TENANTS_MANAGE, 200, other=200),
    Route("PATCH", "/v1/tenants/{tenant}/limits", A.TENANT_LIMITS, 200, other=200, body={"weight": 2}),
    Route("DELETE", "/v1/tenants/{emptytenant}", A.TENANTS_MANAGE, 204, other=204, template="/v1/tenants/{name}"),
    Route("POST", "/v1/keys", A.KEYS_MANAGE, 201, other=201, body={"role": "viewer"}),
    Route("GET", "/v1/keys", A.KEYS_MANAGE, 200, other=200),
    Route("DELETE", "/v1/keys/{key}", A.KEYS_MANAGE, 200),
    Route("GET", "/v1/audit", A.AUDIT_READ, 200, other=200),
    Route("GET", "/v1/usage?tenant={tenant}", A.USAGE_READ, 200, admin_any=True, template="/v1/usage"),
    Route("GET", "/v1/usage/records?tenant={tenant}", A.USAGE_READ, 200, admin_any=True,
          template="/v1/usage/records"),
    Route("GET", "/v1/usage/records/{inv}", A.USAGE_READ, 200, admin_any=True,
          template="/v1/usage/records/{record_id}"),
    Route("GET", "/v1/invoices/{tenant}/{month}", A.USAGE_READ, 200, admin_any=True,
          template="/v1/invoices/{tenant}/{month}"),
    Route("GET", "/v1/plans", A.USAGE_READ, 200, other=200),
    Route("GET", "/v1/billing/tenants", A.TENANTS_MANAGE, 200, other=200),
    Route("GET", "/v1/billing/tenants/{tenant}", A.USAGE_READ, 200, admin_any=True,
          template="/v1/billing/tenants/{tenant}"),
    Route("PUT", "/v1/billing/tenants/{tenant}", A.TENANT_LIMITS, 200, other=200,
          body={"monthly_spend_cap": "100.00"}, template="/v1/billing/tenants/{tenant}"),
    Route("GET", "/v1/functions/{fn}/secrets", A.SECRETS_READ, 200),
    Route("PATCH", "/v1/functions/{fn}/secrets", A.SECRETS_WRITE, 200, body={"API_TOKEN": "tok-0123456789"}),
    Route("DELETE", "/v1/functions/{fn}/secrets/DB_PASSWORD", A.SECRETS_WRITE, 204,
          template="/v1/functions/{name}/secrets/{secret}"),
    Route("DELETE", "/v1/functions/{fn}", A.FUNCTIONS_WRITE, 204),  # near the end: it removes the function
    # last: deploying under the other tenant's name makes a function of one's own, and leaves theirs alone
    Route("POST", "/v1/functions/{fn}/versions", A.FUNCTIONS_WRITE, 201, other=201, files=True),
]
# the HTTP trigger: a public function answers anyone; a key-protected one its tenant's invokers
HTTP_TRIGGER = ("/fn/{name}", "/fn/{name}/{path:path}")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
ROLES = ["admin", "tenant-admin", "developer", "invoker", "viewer"]


async def world(tmp_path) -> tuple[World, list]:
    store, worker = MemoryStore(), FakeWorker()
    records = InvocationLog(store, flush_interval=0.01)
    await records.start()
    secrets = memory_secrets()
    await secrets.start()
    functions = FunctionService(tmp_path, store, LayerStore(tmp_path / "layers"), worker.retire, secrets=secrets)
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    writer = SerialWriter()
    meter = Meter(Ledger(store, Journal(tmp_path / "journal"), writer), store, BillingConfig())
    await meter.start()
    invocations = InvocationService(functions, worker, records, meter=meter)
    events = EventService(functions, store, store, writer)
    dispatcher = Dispatcher(store, store, events, functions, invocations, writer, DispatcherConfig(
        backoff=Backoff(base_s=0.01, cap_s=0.05), poll_s=0.05, heartbeat_s=0.1, lease_s=1.0))  # fmt: skip
    await dispatcher.start()
    tenant_store = MemoryTenantStore()
    tenancy = Tenancy(tenant_store)
    await tenancy.start()
    admin_key = await tenancy.bootstrap(tmp_path)
    assert admin_key
    queues = QueueService(store, events, functions, writer)
    objects = ObjectStore(tmp_path / "s3", f"sqlite:///{tmp_path / 's3.db'}")
    triggers = TriggerManager(MemoryTriggerStore(), enqueue=events.enqueue, invoke=invoker(functions, invocations),
                              dead_letter=dead_letter_queue(queues), function_exists=functions.get)
    audit = AuditLog(tenant_store)
    services = Services(functions, invocations, records, uploads, tenancy, lambda: {}, events=events,
                        queues=queues, objects=objects, triggers=triggers, audit=audit,
                        billing=BillingService(meter, store))  # fmt: skip
    app = build_app(services)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mist")
    keys = {"default-admin": admin_key}
    admin = Caller(Principal("x", "default", Role.ADMIN), "default")
    for name in ("acme", "globex", "empty1", "empty2"):
        await tenancy.create_tenant(name)
    for role in ROLES[1:]:
        keys[role] = (await tenancy.create_key(Caller(admin.principal, "acme"), role))[1]
    keys["admin"] = admin_key
    w = World(client, keys, tmp_path)
    for tenant in ("acme", "globex"):
        w.ids[tenant] = await _resources(w, tenant, admin_key, functions, queues, objects, tenancy)
    return w, [dispatcher, records, tenancy, writer, objects, meter]


async def _resources(w, tenant, admin_key, functions, queues, objects, tenancy) -> dict[str, str]:
    """A function with an invocation, a dead letter, a queue message, a trigger, an S3 key, an
    API key and a secret, in `tenant`, made by the admin acting there."""
    h = {"Authorization": f"Bearer {admin_key}", "X-Mist-Tenant": tenant}
    fn = f"fn-{tenant}"
    files = {"code": ("code.zip", make_zip(w.tmp, HELLO), "application/zip")}
    r = await w.client.post(f"/v1/functions/{fn}/versions", files=files, data={"config": "{}"}, headers=h)
    assert r.status_code == 201, r.text
    inv = (await w.client.post(f"/v1/functions/{fn}/invocations", json={}, headers=h)).headers["x-mist-invocation-id"]
    fid = Caller(None, tenant).fid(fn)
    await queues.send(f"dlq:{fid}", b'{"requestPayload": {"n": 1}}')
    msg = (await queues.dead_letters(fid))[0].id
    queue = "orders"
    await queues.send(Caller(None, tenant).fid(queue), b'{"n": 1}')
    qmsg = (await queues.receive(Caller(None, tenant).fid(queue), visibility_s=0))[0].id
    trigger = (await w.client.post(f"/v1/functions/{fn}/triggers", json=TRIGGER_BODY, headers=h)).json()["id"]
    s3key = (await w.client.post("/v1/s3/keys", headers=h)).json()["access_key_id"]
    key = (await w.client.post("/v1/keys", json={"role": "viewer"}, headers=h)).json()["key_id"]
    r = await w.client.patch(f"/v1/functions/{fn}/secrets", json={"DB_PASSWORD": "pw-0123456789"}, headers=h)
    assert r.status_code == 200, r.text
    return {"fn": fn, "inv": inv, "msg": msg, "queue": queue, "qmsg": qmsg, "trigger": trigger, "s3key": s3key,
            "key": key, "tenant": tenant}


def _fill(route: Route, ids: dict[str, str], n: int) -> str:
    return route.path.format(**ids, newtenant=f"new{n}", emptytenant=f"empty{n}", month=MONTH)


def expected(route: Route, role: str | None, side: str) -> int:
    if route.action is None:
        return route.ok
    if role is None:
        return 401
    if route.action not in ROLE_ACTIONS[Role(role)]:
        return 403
    if role == "admin" and (route.action in (A.TENANTS_MANAGE, A.TENANT_LIMITS) or route.admin_any):
        return route.ok  # tenant routes name tenants, not resources inside one; billing reads any tenant
    return route.ok if side == "own" else route.other


@pytest.mark.parametrize("role", [*ROLES, None])
async def test_every_route_answers_every_role_exactly(tmp_path, role):
    counter = itertools.count(1)
    for side in ("own", "other"):
        # a fresh world per side: the writes of one side must not change what the other finds
        (tmp_path / side).mkdir()
        w, closing = await world(tmp_path / side)
        ids = w.ids["acme" if side == "own" else "globex"]
        headers = {"Authorization": f"Bearer {w.keys[role]}"} if role else {}
        if role == "admin":
            headers["X-Mist-Tenant"] = "acme"
        failures = []
        for route in ROUTES:
            n = next(counter) % 2 + 1
            path = _fill(route, ids, n)
            body = route.body
            if isinstance(body, dict):
                body = {k: (v.format(newtenant=f"new{n}") if isinstance(v, str) else v) for k, v in body.items()}
            kwargs: dict = {"headers": {**headers, **dict(route.headers)}}
            if route.files:
                kwargs["files"] = {"code": ("code.zip", make_zip(tmp_path / side, HELLO), "application/zip")}
                kwargs["data"] = {"config": "{}"}
            elif body is not None:
                kwargs["json"] = body
            r = await w.client.request(route.method, path, **kwargs)
            want = expected(route, role, side)
            if r.status_code != want:
                failures.append(f"{route.method} {path} as {role} ({side}): {r.status_code} != {want}: {r.text[:200]}")
        # the other tenant's function kept its single version and its invocation whatever was tried
        as_globex = {"Authorization": f"Bearer {w.keys['admin']}", "X-Mist-Tenant": "globex"}
        gx = await w.client.get("/v1/functions/fn-globex", headers=as_globex)
        assert gx.status_code == 200 and gx.json()["latest_version"] == 1
        gs = await w.client.get("/v1/functions/fn-globex/secrets", headers=as_globex)  # and its secret, alone
        assert [s["name"] for s in gs.json()["secrets"]] == ["DB_PASSWORD"]
        await _close(w, closing)
        assert not failures, "\n".join(failures)


@pytest.mark.parametrize("http_auth", ["public", "key"])
@pytest.mark.parametrize("role", [*ROLES, "other-tenant", None])
async def test_the_http_trigger_answers_as_its_function_allows(tmp_path, role, http_auth):
    w, closing = await world(tmp_path)
    admin = {"Authorization": f"Bearer {w.keys['admin']}", "X-Mist-Tenant": "acme"}
    r = await w.client.patch("/v1/functions/fn-acme", json={"http_auth": http_auth}, headers=admin)
    assert r.status_code == 201
    if role == "other-tenant":
        admin_g = {"Authorization": f"Bearer {w.keys['admin']}", "X-Mist-Tenant": "globex"}
        key = (await w.client.post("/v1/keys", json={"role": "developer"}, headers=admin_g)).json()["key"]
    else:
        key = w.keys.get(role) if role else None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    if role == "admin":
        headers["X-Mist-Tenant"] = "acme"
    if http_auth == "public":
        want = 200
    elif role is None:
        want = 401
    elif role == "other-tenant":
        want = 404
    else:
        want = 200 if A.FUNCTIONS_INVOKE in ROLE_ACTIONS[Role(role)] else 403
    for method in HTTP_METHODS:
        for path in ("/fn/fn-acme.acme", "/fn/fn-acme.acme/some/path"):
            r = await w.client.request(method, path, headers=headers)
            assert r.status_code == want, (method, path, r.text)
    # the default tenant's name space: /fn/NAME without a tenant never reaches acme's function
    r = await w.client.get("/fn/fn-acme", headers=headers)
    assert r.status_code == 404
    await _close(w, closing)


def test_every_route_of_the_app_is_in_the_matrix(tmp_path):
    from mist.testing.tenancy import bootstrapped

    tenancy, _ = bootstrapped(tmp_path)
    services = Services(None, None, None, tmp_path, tenancy)  # type: ignore[arg-type]
    app = build_app(services).app.app  # EdgeAuth -> InvokeFastPath -> FastAPI
    covered = {(r.method, r.template or _template(r.path)) for r in ROUTES}
    missing = []
    routes = list(_walk(app.routes))
    assert len(routes) >= 45, f"found only {len(routes)} routes: the walk missed the included routers"
    for path, methods in routes:
        for method in methods:
            if method == "HEAD" and ("GET", path) in covered | {("GET", "/docs/oauth2-redirect")}:
                continue  # Starlette answers HEAD wherever GET is served
            if path in HTTP_TRIGGER or path == "/docs/oauth2-redirect":
                continue  # the HTTP trigger has its own test above; the Swagger redirect page is static
            if (method, path) not in covered:
                missing.append(f"{method} {path}")
    assert not missing, f"routes without a row in the matrix: {missing}"


def _walk(routes: list, prefix: str = ""):
    """(path, methods) of every route, through routers included with include_router."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _walk(included.routes, prefix + route.include_context.prefix)
        elif getattr(route, "methods", None):
            yield prefix + route.path, route.methods


def _template(path: str) -> str:
    names = {"fn": "name", "inv": "invocation_id", "msg": "message_id", "queue": "queue", "qmsg": "message_id",
             "trigger": "trigger_id", "s3key": "access_key_id", "key": "key_id", "tenant": "name"}
    for short, full in names.items():
        path = path.replace("{" + short + "}", "{" + full + "}")
    return path


async def _close(w: World, closing: list) -> None:
    await w.client.aclose()
    dispatcher, records, tenancy, writer, objects, meter = closing
    await meter.stop()
    await dispatcher.stop()
    await records.stop()
    await tenancy.stop()
    writer.close()
    objects.close()
