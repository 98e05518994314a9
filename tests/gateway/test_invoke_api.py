import base64
import json

import pytest

from mist.errors import NoCapacity
from mist.testing import worker as fake
from tests.gateway.conftest import deploy


@pytest.fixture
async def hello(client, tmp_path):
    r = await deploy(client, tmp_path)
    assert r.status_code == 201
    return r.json()


async def test_invoke_returns_the_value_with_invocation_headers(client, hello):
    r = await client.post("/v1/functions/hello/invocations", content=b'{"name": "x"}')
    assert r.status_code == 200 and r.json() == {"name": "x"}
    assert r.headers["x-mist-invocation-id"]
    assert r.headers["x-mist-cold-start"] == "true"
    assert "x-mist-function-error" not in r.headers
    r2 = await client.post("/v1/functions/hello/invocations", content=b"{}")
    assert r2.headers["x-mist-cold-start"] == "false"


async def test_empty_body_is_a_null_event(client, hello, worker):
    await client.post("/v1/functions/hello/invocations")
    assert worker.calls[-1][2] == b"null"


async def test_record_has_timing_billing_and_logs(client, hello):
    r = await client.post("/v1/functions/hello/invocations", content=b'{"a": 1}')
    rec = (await client.get(f"/v1/invocations/{r.headers['x-mist-invocation-id']}")).json()
    assert rec["function"] == "hello" and rec["version"] == 1 and rec["status"] == "succeeded"
    assert rec["cold_start"] is True and rec["billed_ms"] == 1 and rec["memory_mb"] == 128
    assert rec["logs"][0]["text"] == 'event: {"a": 1}'
    assert rec["started_at"].endswith("+00:00")


async def test_function_error_is_500_with_header_and_lambda_body(client, hello, worker):
    worker.behaviour = fake.fails("ZeroDivisionError", "division by zero")
    r = await client.post("/v1/functions/hello/invocations", content=b"{}")
    assert r.status_code == 500
    assert r.headers["x-mist-function-error"] == "Unhandled"
    assert r.json() == {"errorType": "ZeroDivisionError", "errorMessage": "division by zero", "stackTrace": []}
    rec = (await client.get(f"/v1/invocations/{r.headers['x-mist-invocation-id']}")).json()
    assert rec["status"] == "failed" and rec["error_type"] == "ZeroDivisionError"


async def test_unknown_function_is_404_saying_what_to_do(client):
    r = await client.post("/v1/functions/nope/invocations", content=b"{}")
    assert r.status_code == 404
    assert "x-mist-function-error" not in r.headers
    assert "mist ls" in r.json()["error"]["message"]


async def test_body_that_is_not_json_is_400(client, hello):
    r = await client.post("/v1/functions/hello/invocations", content=b"{nope")
    assert r.status_code == 400 and "not JSON" in r.json()["error"]["message"]


@pytest.mark.parametrize("body", [b'{"x": NaN}', b"Infinity", b'[-Infinity]'])
async def test_nan_and_infinity_are_refused_as_not_json(client, hello, body):
    r = await client.post("/v1/functions/hello/invocations", content=body)
    assert r.status_code == 400 and "is not a JSON value" in r.json()["error"]["message"]



async def test_payload_over_6mb_is_413(client, hello, worker):
    body = json.dumps("x" * (6 * 1024 * 1024)).encode()
    r = await client.post("/v1/functions/hello/invocations", content=body)
    assert r.status_code == 413 and "6 MB" in r.json()["error"]["message"]
    assert worker.calls == []


@pytest.mark.parametrize(("queue_full", "status"), [(True, 429), (False, 503)])
async def test_no_capacity_is_429_or_503_with_retry_after(client, hello, worker, queue_full, status):
    def busy(spec, payload):
        raise NoCapacity("no instance of hello became free within 30 s; retry later", retry_after=2.5,
                         queue_full=queue_full)
    worker.behaviour = busy
    r = await client.post("/v1/functions/hello/invocations", content=b"{}")
    assert r.status_code == status
    assert r.headers["retry-after"] == "3"
    assert r.json()["error"]["code"] == "NoCapacity"
    rec = (await client.get(f"/v1/invocations/{r.headers['x-mist-invocation-id']}")).json()
    assert rec["status"] == "error"


async def test_version_qualifier_invokes_an_older_version(client, hello, tmp_path, worker):
    await deploy(client, tmp_path)
    r = await client.post("/v1/functions/hello/invocations?version=1", content=b"{}")
    assert r.headers["x-mist-version"] == "1" and worker.calls[-1][0].version == 1
    r = await client.post("/v1/functions/hello/invocations?version=7", content=b"{}")
    assert r.status_code == 404 and "has no version 7" in r.json()["error"]["message"]


async def test_http_trigger_gives_a_payload_2_event_and_maps_the_response(client, hello, worker):
    def app(spec, payload):
        ev = json.loads(payload)
        body = json.dumps({"path": ev["rawPath"], "q": ev.get("queryStringParameters"),
                           "method": ev["requestContext"]["http"]["method"]})
        return fake.returns({"statusCode": 201, "headers": {"x-app": "1"}, "cookies": ["c=1"], "body": body})(
            spec, payload)
    worker.behaviour = app
    r = await client.put("/fn/hello/any/path?q=1", content=b"hi")
    assert r.status_code == 201 and r.headers["x-app"] == "1" and r.headers["set-cookie"] == "c=1"
    assert r.json() == {"path": "/any/path", "q": {"q": "1"}, "method": "PUT"}
    assert r.headers["x-mist-invocation-id"]


async def test_http_trigger_round_trips_binary_bodies(client, hello, worker):
    raw = bytes(range(256))
    def echo_binary(spec, payload):
        ev = json.loads(payload)
        assert ev["isBase64Encoded"] is True
        return fake.returns({"statusCode": 200, "body": ev["body"], "isBase64Encoded": True,
                             "headers": {"content-type": "application/octet-stream"}})(spec, payload)
    worker.behaviour = echo_binary
    r = await client.post("/fn/hello", content=raw, headers={"content-type": "application/octet-stream"})
    assert r.status_code == 200 and r.content == raw


async def test_http_trigger_function_error_is_502(client, hello, worker):
    worker.behaviour = fake.fails("ValueError", "bad")
    r = await client.get("/fn/hello/x")
    assert r.status_code == 502 and r.headers["x-mist-function-error"] == "Unhandled"


async def test_logs_endpoint_returns_lines_as_ndjson(client, hello):
    r = await client.post("/v1/functions/hello/invocations", content=b'"one"')
    await client.post("/v1/functions/hello/invocations", content=b'"two"')
    lines = [json.loads(l) for l in (await client.get("/v1/functions/hello/logs")).text.splitlines() if l]
    assert [l["text"] for l in lines] == ['event: "one"', 'event: "two"']
    only = (await client.get(f"/v1/functions/hello/logs?invocation_id={r.headers['x-mist-invocation-id']}")).text
    assert [json.loads(l)["text"] for l in only.splitlines() if l] == ['event: "one"']
