"""The billing routes (docs/api.md#billing) over the in-memory store and a fake worker, through
the fast path and through FastAPI alike."""

import asyncio
import csv
import io
import time

import httpx
import pytest

from mist.control.batching import SerialWriter
from mist.control.dispatcher import Dispatcher, DispatcherConfig
from mist.control.events import EventService
from mist.control.functions import FunctionService
from mist.control.invocations import InvocationService
from mist.control.layers import LayerStore
from mist.control.records import InvocationLog
from mist.core.retry import Backoff
from mist.gateway.app import build_app
from mist.gateway.services import Services
from mist.metering.journal import Journal
from mist.metering.ledger import Ledger
from mist.metering.meter import Meter
from mist.metering.plans import parse
from mist.metering.service import BillingService
from mist.metering.usage import month_of
from mist.testing.stores import MemoryStore
from mist.testing.tenancy import bootstrapped
from mist.testing.worker import FakeWorker, fails
from mist.worker.types import InvokeResult
from tests.gateway.conftest import deploy

PLANS = parse({"default_plan": "standard", "plans": {
    "standard": {"free_requests": 0, "free_gb_s": 0, "per_million_requests": "200000"},  # 0.20 per request
    "pro": {"per_million_requests": "0.10"},
}}, "test plans")  # fmt: skip
MONTH = month_of(time.time())


def ran_for(duration_ms: float):
    def behaviour(spec, payload):
        now = time.time()
        return InvokeResult(ok=True, payload=payload, duration_ms=duration_ms, started_at=now, ended_at=now)

    return behaviour


@pytest.fixture(params=["fast-path", "fastapi"])
async def api(request, tmp_path):
    store = MemoryStore()
    worker = FakeWorker(behaviour=ran_for(2.5))
    writer = SerialWriter()
    records = InvocationLog(store, flush_interval=0.01)
    await records.start()
    meter = Meter(Ledger(store, Journal(tmp_path / "journal"), writer), store, PLANS)
    await meter.start()
    functions = FunctionService(tmp_path, store, LayerStore(tmp_path / "layers"), worker.retire)
    invocations = InvocationService(functions, worker, records, meter=meter)
    events = EventService(functions, store, store, writer)
    dispatcher = Dispatcher(store, store, events, functions, invocations, writer, DispatcherConfig(
        backoff=Backoff(base_s=0.01, cap_s=0.05), poll_s=0.05, heartbeat_s=0.1, lease_s=1.0))  # fmt: skip
    await dispatcher.start()
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    tenancy, admin_key = bootstrapped(tmp_path)
    services = Services(functions, invocations, records, uploads, tenancy, events=events,
                        billing=BillingService(meter, store))
    app = build_app(services, fast_path=request.param == "fast-path")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://mist",
                                 headers={"Authorization": f"Bearer {admin_key}"}) as c:
        c.worker = worker
        yield c
    await dispatcher.stop()
    await records.stop()
    await meter.stop()
    writer.close()


async def invoke_n(api, n, name="hello"):
    ids = []
    for _ in range(n):
        r = await api.post(f"/v1/functions/{name}/invocations", json={})
        assert r.status_code == 200
        ids.append(r.headers["x-mist-invocation-id"])
    return ids


async def event_done(api, event_id):
    for _ in range(300):
        view = (await api.get(f"/v1/invocations/{event_id}")).json()
        if view["status"] in ("succeeded", "dead-lettered"):
            return view
        await asyncio.sleep(0.01)
    raise AssertionError(view)


async def test_usage_counts_every_attempt_per_function(api, tmp_path):
    await deploy(api, tmp_path, "hello", config='{"memory_mb": 256}')
    await deploy(api, tmp_path, "other")
    await invoke_n(api, 3)
    await invoke_n(api, 1, "other")
    api.worker.behaviour = fails("ValueError", "no")
    event = (await api.post("/v1/functions/other/invocations", json={},
                            headers={"X-Mist-Invocation-Type": "Event"})).json()["invocation_id"]  # fmt: skip
    view = await event_done(api, event)
    report = (await api.get("/v1/usage")).json()
    rows = {r["function"]: r for r in report["rows"]}
    assert (rows["hello"]["requests"], rows["hello"]["billed_ms"], rows["hello"]["mb_ms"]) == (3, 9, 3 * 3 * 256)
    assert rows["other"]["requests"] == 1 + len(view["attempts"]) == 4  # each retry of the event is billed
    assert rows["other"]["failed"] == 3 and rows["other"]["tenant"] == "default"
    assert report["total"]["requests"] == 7 and report["by"] == "function" and report["tenant"] is None


async def test_usage_by_day_and_hour_and_as_csv(api, tmp_path):
    await deploy(api, tmp_path)
    await invoke_n(api, 2)
    day = (await api.get("/v1/usage", params={"by": "day", "tenant": "default"})).json()
    assert [r["day"] for r in day["rows"]] == [time.strftime("%Y-%m-%d", time.gmtime())]
    hour = (await api.get("/v1/usage", params={"by": "hour"})).json()
    assert hour["rows"][0]["hour"] == time.strftime("%Y-%m-%dT%H:00Z", time.gmtime())
    r = await api.get("/v1/usage", params={"by": "day", "format": "csv"})
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == ["tenant", "day", "requests", "failed", "cold_starts", "billed_ms", "mb_ms", "gb_s",
                             "provisioned_mb_ms", "provisioned_gb_s"]  # fmt: skip
    assert (rows[0]["requests"], rows[0]["mb_ms"], rows[0]["gb_s"]) == ("2", str(2 * 3 * 128), "0.000750")


async def test_a_period_with_nothing_in_it_is_empty(api, tmp_path):
    await deploy(api, tmp_path)
    await invoke_n(api, 1)
    report = (await api.get("/v1/usage", params={"from": "2020-01-01", "to": "2020-02-01"})).json()
    assert report["rows"] == [] and report["total"]["requests"] == 0
    assert report["from"].startswith("2020-01-01T00:00:00")


async def test_the_ledger_is_listed_record_by_record_and_paged(api, tmp_path):
    await deploy(api, tmp_path)
    ids = await invoke_n(api, 5)
    first = (await api.get("/v1/usage/records", params={"limit": 3})).json()
    rest = (await api.get("/v1/usage/records", params={"limit": 3, "after": first["next"]})).json()
    assert [r["id"] for r in first["records"] + rest["records"]] == sorted(ids) and rest["next"] is None
    one = (await api.get(f"/v1/usage/records/{ids[0]}")).json()
    assert (one["kind"], one["function"], one["billed_ms"], one["memory_mb"], one["outcome"]) == (
        "invocation", "hello", 3, 128, "succeeded")
    missing = await api.get("/v1/usage/records/nope")
    assert missing.status_code == 404 and "no usage record 'nope'" in missing.json()["error"]["message"]


async def test_an_invoice_has_line_items_and_a_total_in_json_and_csv(api, tmp_path):
    await deploy(api, tmp_path)
    await invoke_n(api, 4)
    doc = (await api.get(f"/v1/invoices/default/{MONTH}")).json()
    lines = {line["kind"]: line for line in doc["lines"]}
    assert lines["requests"]["amount"] == "0.80" and lines["requests"]["unit_price"] == "0.2"
    # compute: 4 x 3 ms x 128 MB = 0.0015 GB-s x 0.0000166667 = 0.025 micro-units, rounded to 0
    assert lines["compute"]["amount_micros"] == 0 and lines["compute"]["quantity"] == "0.0015"
    assert (doc["total"], doc["total_micros"], doc["currency"], doc["plan"]["name"]) == ("0.80", 800_000, "USD",
                                                                                          "standard")
    assert doc["status"].startswith("open") and [f["function"] for f in doc["by_function"]] == ["hello"]
    text = (await api.get(f"/v1/invoices/default/{MONTH}", params={"format": "csv"})).text
    assert text.splitlines()[0] == "kind,quantity,unit,unit_price,amount,amount_micros,currency"
    assert text.splitlines()[-1] == "total,,,,0.80,800000,USD"


async def test_a_month_without_usage_costs_nothing(api):
    doc = (await api.get("/v1/invoices/nobody/2020-02")).json()
    assert (doc["total"], doc["status"], doc["by_function"]) == ("0.00", "closed", [])


async def test_plans_are_listed(api):
    plans = (await api.get("/v1/plans")).json()
    assert plans["default_plan"] == "standard" and [p["name"] for p in plans["plans"]] == ["pro", "standard"]
    assert plans["plans"][0]["per_million_requests"] == "0.10" and plans["source"] == "test plans"


async def test_a_tenant_moves_to_another_plan_and_its_invoice_follows(api, tmp_path):
    await deploy(api, tmp_path)
    await invoke_n(api, 2)
    r = await api.put("/v1/billing/tenants/default", json={"plan": "pro"})
    assert r.status_code == 200 and (r.json()["plan"], r.json()["plan_is_default"]) == ("pro", False)
    assert (await api.get(f"/v1/invoices/default/{MONTH}")).json()["total"] == "0.00"  # pro has a free tier
    listed = (await api.get("/v1/billing/tenants")).json()["tenants"]
    assert [(t["tenant"], t["plan"], t["requests"]) for t in listed] == [("default", "pro", 2)]
    back = (await api.put("/v1/billing/tenants/default", json={"plan": None})).json()
    assert (back["plan"], back["plan_is_default"]) == ("standard", True)


async def test_at_its_spend_cap_a_tenant_is_refused_with_402_sync_async_and_over_http(api, tmp_path):
    await deploy(api, tmp_path)
    await invoke_n(api, 1)
    r = await api.put("/v1/billing/tenants/default", json={"monthly_spend_cap": "0.20"})
    assert (r.json()["monthly_spend_cap"], r.json()["cap_reached"], r.json()["month_to_date"]) == ("0.20", True, "0.20")
    calls = len(api.worker.calls)
    sync = await api.post("/v1/functions/hello/invocations", json={})
    event = await api.post("/v1/functions/hello/invocations", json={}, headers={"X-Mist-Invocation-Type": "Event"})
    http = await api.get("/fn/hello/x")
    for answer in (sync, event, http):
        assert answer.status_code == 402 and answer.json()["error"]["code"] == "SpendCapReached"
        assert "x-mist-function-error" not in answer.headers
    assert "reached its monthly spend cap of 0.20 USD" in sync.json()["error"]["message"]
    assert len(api.worker.calls) == calls  # nothing ran
    await api.put("/v1/billing/tenants/default", json={"monthly_spend_cap": None})
    assert (await api.post("/v1/functions/hello/invocations", json={})).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "message"),
    [
        ("GET", "/v1/usage?by=week", None, "by must be one of function, day, hour, got 'week'"),
        ("GET", "/v1/usage?from=2026-02-01&to=2026-01-01", None, "to must be after from"),
        ("GET", "/v1/usage?from=yesterday", None, "from must be an ISO 8601 date"),
        ("GET", "/v1/usage?format=xml", None, "format must be json or csv, got 'xml'"),
        ("GET", "/v1/usage?tenant=a%20b", None, "invalid tenant name"),
        ("GET", "/v1/usage/records?limit=0", None, "limit must be from 1 to 10000, got 0"),
        ("GET", "/v1/invoices/default/2026-13", None, "month must look like 2026-11"),
        ("PUT", "/v1/billing/tenants/default", {"plan": "gold"}, "plan 'gold' does not exist; plans: pro, standard"),
        ("PUT", "/v1/billing/tenants/default", {"monthly_spend_cap": "-5"}, "monthly_spend_cap must be an amount >= 0"),
        ("PUT", "/v1/billing/tenants/default", {"cap": "5"}, "must be a JSON object with plan and/or monthly_spend_cap"),
        ("PUT", "/v1/billing/tenants/default", {"plan": 3}, "plan must be a plan's name or null"),
    ],
)
async def test_bad_requests_are_refused_saying_what_is_wrong(api, method, path, body, message):
    r = await api.request(method, path, json=body)
    assert r.status_code == 400 and message in r.json()["error"]["message"]
