"""Secrets through the API: set, list (names only), remove; injected at instance start, never shown,
masked in logs and errors; a change restarts the function's instances."""

import asyncio
import json

import pytest

from mist.worker.types import InvokeResult, LogLine
from tests.gateway.conftest import HELLO, deploy, make_zip

TOKEN = "tok-0123456789abcdef"


def prints_its_environment(spec, payload):
    """A function that prints its TOKEN and fails with it in the message when asked to."""
    env = dict(spec.env)
    logs = [LogLine(1.0, "stdout", f"token={env.get('TOKEN')} region={env.get('REGION')}")]
    if json.loads(payload or b"null") == "fail":
        return InvokeResult(ok=False, logs=logs, error={
            "errorType": "RuntimeError", "errorMessage": f"cannot log in with {env.get('TOKEN')}",
            "stackTrace": [f'  File "/var/task/main.py", line 2, in handler\n    login("{env.get("TOKEN")}")\n']})
    return InvokeResult(ok=True, payload=json.dumps({"has_token": "TOKEN" in env}).encode(), logs=logs)


@pytest.fixture
async def hello(client, tmp_path, worker):
    r = await deploy(client, tmp_path, config='{"env": {"REGION": "eu", "TOKEN": "from-env"}}')
    assert r.status_code == 201
    worker.behaviour = prints_its_environment
    return r.json()


async def test_a_secret_is_in_the_instance_environment_and_nowhere_in_the_api(client, hello, worker):
    r = await client.patch("/v1/functions/hello/secrets", json={"TOKEN": TOKEN})
    assert r.status_code == 200
    assert [(s["name"], s["readable"]) for s in r.json()["secrets"]] == [("TOKEN", True)]
    r = await client.post("/v1/functions/hello/invocations", json={})
    assert r.status_code == 200 and r.json() == {"has_token": True}
    spec = worker.calls[-1][0]
    assert dict(spec.env) == {"REGION": "eu", "TOKEN": TOKEN}  # over `env` of the same name
    assert TOKEN not in repr(spec)
    for path in ("/v1/functions/hello", "/v1/functions", "/v1/functions/hello/versions",
                 "/v1/functions/hello/versions/1", "/v1/functions/hello/secrets", "/v1/statistics"):
        answer = await client.get(path)
        assert answer.status_code == 200 and TOKEN not in answer.text, path
    assert (await client.get("/v1/functions/hello")).json()["latest"]["env"] == {"REGION": "eu", "TOKEN": "from-env"}


async def test_secret_values_are_masked_in_logs_records_and_errors(client, hello):
    await client.patch("/v1/functions/hello/secrets", json={"TOKEN": TOKEN})
    follower = client.services.records.follow("hello")
    r = await client.post("/v1/functions/hello/invocations", json="fail")
    assert r.status_code == 500 and TOKEN not in r.text
    assert r.json()["errorMessage"] == "cannot log in with ***" and '"***"' in r.json()["stackTrace"][0]
    assert follower.get_nowait().text == "token=*** region=eu"  # streamed masked (mist logs --follow)
    record = (await client.get(f"/v1/invocations/{r.headers['x-mist-invocation-id']}")).json()
    assert record["error_message"] == "cannot log in with ***" and record["logs"][0]["text"] == "token=*** region=eu"
    logs = await client.get("/v1/functions/hello/logs")
    assert TOKEN not in logs.text and "token=***" in logs.text
    event = await client.post("/v1/functions/hello/invocations", json="fail",
                              headers={"X-Mist-Invocation-Type": "Event"})
    for _ in range(200):  # an asynchronous invocation's attempts keep the masked error too
        view = (await client.get(f"/v1/invocations/{event.json()['invocation_id']}")).json()
        if view["attempts"] and view["attempts"][0]["outcome"] != "running":
            break
        await asyncio.sleep(0.01)
    assert view["attempts"][0]["error_message"] == "cannot log in with ***"


async def test_changing_a_secret_restarts_the_function_and_the_next_call_gets_the_new_value(client, hello, worker):
    await client.patch("/v1/functions/hello/secrets", json={"TOKEN": TOKEN})
    first = worker.restarted[-1]
    await client.post("/v1/functions/hello/invocations", json={})
    r = await client.patch("/v1/functions/hello/secrets", json={"TOKEN": "tok-rotated-9999", "EXTRA": "more-stuff"})
    assert [s["name"] for s in r.json()["secrets"]] == ["EXTRA", "TOKEN"]
    assert worker.restarted[-1][0] == "hello" and worker.restarted[-1][1] > first[1]
    r = await client.post("/v1/functions/hello/invocations", json={})
    spec = worker.calls[-1][0]
    assert r.headers["x-mist-cold-start"] == "true" and spec.revision == worker.restarted[-1][1]
    assert dict(spec.env)["TOKEN"] == "tok-rotated-9999"
    assert (await client.delete("/v1/functions/hello/secrets/TOKEN")).status_code == 204
    await client.post("/v1/functions/hello/invocations", json={})
    assert dict(worker.calls[-1][0].env)["TOKEN"] == "from-env"  # the config's env again
    assert len(worker.restarted) == 3


async def test_bad_changes_are_refused_without_echoing_the_value(client, hello, worker):
    cases = [
        ({"AWS_SECRET_ACCESS_KEY": TOKEN}, 400, "is reserved"),
        ({"9LIVES": TOKEN}, 400, "is not valid"),
        ({"TOKEN": 12}, 400, "must be a string"),
        ({"NOT_THERE": None}, 404, "has no secret 'NOT_THERE'"),
        ({}, 400, "JSON object of names to values"),
        ([TOKEN], 400, "JSON object of names to values"),
    ]
    for body, status, says in cases:
        r = await client.patch("/v1/functions/hello/secrets", json=body)
        assert (r.status_code, TOKEN in r.text) == (status, False) and says in r.json()["error"]["message"], body
    r = await client.patch("/v1/functions/hello/secrets", content=b'{"TOKEN": "' + TOKEN.encode())
    assert r.status_code == 400 and TOKEN not in r.text
    assert (await client.delete("/v1/functions/hello/secrets/NOPE")).status_code == 404
    assert (await client.get("/v1/functions/nope/secrets")).status_code == 404
    assert (await client.patch("/v1/functions/nope/secrets", json={"A": "b"})).status_code == 404
    assert worker.restarted == []  # nothing changed, nothing restarted
    r = await client.patch("/v1/functions/hello/secrets", json={"PIN": "123"})
    assert r.status_code == 200 and "not masked" in r.json()["warnings"][0]


async def test_deleting_a_function_deletes_its_secrets(client, hello, tmp_path):
    await client.patch("/v1/functions/hello/secrets", json={"TOKEN": TOKEN})
    assert (await client.delete("/v1/functions/hello")).status_code == 204
    await deploy(client, tmp_path)
    assert (await client.get("/v1/functions/hello/secrets")).json() == {"secrets": []}


async def test_another_tenants_function_has_its_own_secrets(client, hello, tmp_path):
    await client.post("/v1/tenants", json={"name": "acme"})
    acme = {"X-Mist-Tenant": "acme"}
    assert (await client.get("/v1/functions/hello/secrets", headers=acme)).status_code == 404
    assert (await client.patch("/v1/functions/hello/secrets", json={"T": "x"}, headers=acme)).status_code == 404
    r = await client.post("/v1/functions/hello/versions", headers=acme, data={"config": "{}"},
                          files={"code": ("c.zip", make_zip(tmp_path, HELLO), "application/zip")})
    assert r.status_code == 201
    assert (await client.patch("/v1/functions/hello/secrets", json={"TOKEN": "acme-own-token"},
                               headers=acme)).status_code == 200
    await client.patch("/v1/functions/hello/secrets", json={"TOKEN": TOKEN})
    assert [s["name"] for s in (await client.get("/v1/functions/hello/secrets", headers=acme)).json()["secrets"]] \
        == ["TOKEN"]
    assert dict(client.services.functions.spec(await client.services.functions.resolve("acme/hello")).env)[
        "TOKEN"] == "acme-own-token"
