"""Asynchronous invocations over the API (fast path and FastAPI alike): 202, idempotency,
status, dead-letter queues, queues. The worker is the fake; backoff is milliseconds."""

import asyncio
import json
import time

import pytest

from mist.testing import worker as fake
from tests.gateway.conftest import deploy

EVENT = {"X-Mist-Invocation-Type": "Event"}


@pytest.fixture
async def hello(client, tmp_path):
    r = await deploy(client, tmp_path, config=json.dumps({"retries": 1}))
    assert r.status_code == 201
    return r.json()


async def settled(client, inv_id, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = (await client.get(f"/v1/invocations/{inv_id}")).json()
        if body["status"] not in ("queued", "running"):
            return body
        await asyncio.sleep(0.01)
    raise AssertionError(f"{inv_id} still {body['status']}")


async def test_event_is_answered_202_with_its_id_then_runs(client, hello, worker):
    r = await client.post("/v1/functions/hello/invocations", content=b'{"n": 1}', headers=EVENT)
    assert r.status_code == 202
    inv_id = r.json()["invocation_id"]
    assert r.json() == {"invocation_id": inv_id} and r.headers["x-mist-invocation-id"] == inv_id
    body = await settled(client, inv_id)
    assert body["status"] == "succeeded" and body["invocation_type"] == "Event" and body["trigger"] == "event"
    [attempt] = body["attempts"]
    assert attempt["outcome"] == "succeeded" and attempt["record_id"] == f"{inv_id}-1"
    record = (await client.get(f"/v1/invocations/{inv_id}-1")).json()  # the attempt's own record
    assert record["status"] == "succeeded" and record["logs"][0]["text"] == 'event: {"n": 1}'
    assert worker.calls[-1][1] == inv_id


async def test_status_lists_each_attempts_error_and_the_dead_letter(client, hello, worker):
    worker.behaviour = fake.fails("ValueError", "bad order")
    r = await client.post("/v1/functions/hello/invocations", content=b'{"order": 1}', headers=EVENT)
    body = await settled(client, r.json()["invocation_id"])
    assert (body["status"], body["condition"], body["destination"]) == ("dead-lettered", "RetriesExhausted", "dlq")
    assert [(a["attempt"], a["outcome"], a["error_type"], a["error_message"]) for a in body["attempts"]] == [
        (1, "failed", "ValueError", "bad order"), (2, "failed", "ValueError", "bad order")]
    assert body["function_errors"] == 2 and body["next_attempt_at"] is None


async def test_a_repeated_idempotency_key_returns_the_first_id_and_runs_nothing(client, hello, worker):
    headers = {**EVENT, "X-Mist-Idempotency-Key": "order-42"}
    first = await client.post("/v1/functions/hello/invocations", content=b"{}", headers=headers)
    again = await client.post("/v1/functions/hello/invocations", content=b'{"other": 1}', headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json() and again.headers["x-mist-idempotent-replayed"] == "true"
    assert "x-mist-idempotent-replayed" not in first.headers
    await settled(client, first.json()["invocation_id"])
    await asyncio.sleep(0.05)
    assert len(worker.calls) == 1


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"X-Mist-Invocation-Type": "DryRun"}, "X-Mist-Invocation-Type must be RequestResponse or Event, got 'DryRun'"),
        ({"X-Mist-Idempotency-Key": "k"}, "X-Mist-Idempotency-Key applies to asynchronous invocations"),
        ({**EVENT, "X-Mist-Idempotency-Key": "x" * 256}, "X-Mist-Idempotency-Key must be 1 to 255 printable"),
    ],
)
async def test_bad_invocation_headers_are_400_naming_the_header(client, hello, worker, headers, message):
    r = await client.post("/v1/functions/hello/invocations", content=b"{}", headers=headers)
    assert r.status_code == 400 and message in r.json()["error"]["message"]
    assert worker.calls == []


async def test_an_event_for_an_unknown_function_or_too_large_is_refused_before_it_is_stored(client, hello):
    r = await client.post("/v1/functions/nope/invocations", content=b"{}", headers=EVENT)
    assert r.status_code == 404
    big = json.dumps("x" * (1024 * 1024)).encode()
    r = await client.post("/v1/functions/hello/invocations", content=big, headers=EVENT)
    assert r.status_code == 413 and "1 MB" in r.json()["error"]["message"]
    r = await client.post("/v1/functions/hello/invocations", content=b"{nope", headers=EVENT)
    assert r.status_code == 400


async def test_a_sync_invocation_still_has_its_record_with_status(client, hello):
    r = await client.post("/v1/functions/hello/invocations", content=b"{}")
    body = (await client.get(f"/v1/invocations/{r.headers['x-mist-invocation-id']}")).json()
    assert body["status"] == "succeeded" and body["trigger"] == "api"


async def test_dead_letter_queue_lists_shows_and_redrives(client, hello, worker):
    worker.behaviour = fake.fails("ValueError", "bad order")
    ids = []
    for n in range(2):
        r = await client.post("/v1/functions/hello/invocations", content=json.dumps({"n": n}).encode(), headers=EVENT)
        ids.append(r.json()["invocation_id"])
    for inv_id in ids:
        await settled(client, inv_id)
    listed = (await client.get("/v1/functions/hello/dlq")).json()["messages"]  # in the order they failed
    assert sorted((m["invocation_id"], m["condition"], m["attempts"], m["error_type"], m["error_message"])
                  for m in listed) == sorted((i, "RetriesExhausted", 2, "ValueError", "bad order") for i in ids)  # fmt: skip
    first, second = sorted(listed, key=lambda m: ids.index(m["invocation_id"]))
    shown = (await client.get(f"/v1/functions/hello/dlq/{first['id']}")).json()
    assert shown["record"]["requestPayload"] == {"n": 0} and shown["record"]["version"] == "1.0"
    worker.behaviour = fake.echo
    r = await client.post("/v1/functions/hello/dlq/redrive", json={"ids": [second["id"]]})
    [moved] = r.json()["redriven"]
    assert moved["message_id"] == second["id"]
    assert (await settled(client, moved["invocation_id"]))["status"] == "succeeded"
    assert worker.calls[-1][2] == b'{"n": 1}'
    left = (await client.get("/v1/functions/hello/dlq")).json()["messages"]
    assert [m["id"] for m in left] == [first["id"]]
    r = await client.post("/v1/functions/hello/dlq/redrive")  # no body: all of them
    assert len(r.json()["redriven"]) == 1
    assert (await client.get("/v1/functions/hello/dlq")).json()["messages"] == []


async def test_dead_letter_errors_say_what_to_do(client, hello):
    r = await client.get("/v1/functions/hello/dlq/nope")
    assert r.status_code == 404 and "mist dlq ls hello" in r.json()["error"]["message"]
    r = await client.post("/v1/functions/hello/dlq/redrive", json={"ids": "all"})
    assert r.status_code == 400 and '{"ids"' in r.json()["error"]["message"]
    r = await client.post("/v1/functions/nope/dlq/redrive")
    assert r.status_code == 404


async def test_queue_destination_receive_and_delete(client, tmp_path, worker):
    r = await deploy(client, tmp_path, name="maker", config=json.dumps({"on_success": "queue:made"}))
    assert r.status_code == 201 and r.json()["on_success"] == "queue:made"
    inv_id = (await client.post("/v1/functions/maker/invocations", content=b'{"n": 5}', headers=EVENT)).json()[
        "invocation_id"]
    assert (await settled(client, inv_id))["destination"] == "queue:made"
    queues = (await client.get("/v1/queues")).json()["queues"]
    assert {"name": "made", "messages": 1, "visible": 1} in queues
    [message] = (await client.post("/v1/queues/made/receive?max=5&visibility_timeout=60")).json()["messages"]
    assert message["body"]["requestContext"]["condition"] == "Success"
    assert message["body"]["responsePayload"] == {"n": 5} and message["receive_count"] == 1
    assert (await client.post("/v1/queues/made/receive")).json()["messages"] == []  # hidden while received
    assert (await client.delete(f"/v1/queues/made/messages/{message['id']}")).status_code == 204
    assert (await client.delete(f"/v1/queues/made/messages/{message['id']}")).status_code == 404
    r = await client.post("/v1/queues/made/receive?max=1000")
    assert r.status_code == 400 and "max must be from 1 to 100" in r.json()["error"]["message"]


async def test_destination_config_is_validated_and_patched(client, hello):
    r = await client.patch("/v1/functions/hello", json={"on_failure": "function:hello"})
    assert r.status_code == 400 and "on_failure cannot be the function itself" in r.json()["error"]["message"]
    r = await client.patch("/v1/functions/hello", json={"retries": 0, "max_event_age_s": 120,
                                                       "on_failure": "queue:errors"})  # fmt: skip
    assert r.status_code == 201
    assert {k: r.json()[k] for k in ("retries", "max_event_age_s", "on_failure")} == {
        "retries": 0, "max_event_age_s": 120, "on_failure": "queue:errors"}
