"""Asynchronous invocations against a real `mist up` with real sandboxes: retries, the
dead-letter queue and redrive, destinations, idempotency — through the CLI and the API."""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.conftest import write_function

pytestmark = pytest.mark.sandbox

# Fails while the event's "fail" is more than the attempts seen for this request id (one
# instance: --max-instances 1 keeps the count in one place).
FLAKY = """
SEEN = {}

def handler(event, context):
    SEEN[context.aws_request_id] = SEEN.get(context.aws_request_id, 0) + 1
    if SEEN[context.aws_request_id] <= (event or {}).get("fail", 0):
        raise RuntimeError(f"attempt {SEEN[context.aws_request_id]} fails")
    return {"attempts": SEEN[context.aws_request_id], "event": event}
"""


def deploy(server, tmp_path, name, code, *options):
    src = write_function(tmp_path / name, {"main.py": code})
    r = server.cli("deploy", name, str(src), "--max-instances", "1", *options)
    assert r.returncode == 0, r.stderr


def invoke_async(server, name, event, *options) -> str:
    r = server.cli("invoke", name, "--async", "--data", json.dumps(event), *options)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def settled(server, inv_id, timeout=30.0) -> dict:
    deadline = time.monotonic() + timeout
    with server.client() as c:
        while time.monotonic() < deadline:
            body = c.get(f"/v1/invocations/{inv_id}").json()
            if body["status"] not in ("queued", "running"):
                return body
            time.sleep(0.1)
    raise AssertionError(f"{inv_id} is still {body['status']} after {timeout} s: {body}")


def receive(server, queue) -> list[dict]:
    r = server.cli("queue", "receive", queue, "--max", "10", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["messages"]


def test_a_function_that_fails_twice_succeeds_on_its_third_attempt(server, tmp_path):
    deploy(server, tmp_path, "flaky", FLAKY, "--retries", "2")
    inv_id = invoke_async(server, "flaky", {"fail": 2})
    body = settled(server, inv_id)
    assert body["status"] == "succeeded" and body["function_errors"] == 2
    assert [(a["outcome"], a["error_type"], a["error_message"]) for a in body["attempts"]] == [
        ("failed", "RuntimeError", "attempt 1 fails"), ("failed", "RuntimeError", "attempt 2 fails"),
        ("succeeded", None, None)]
    shown = server.cli("invocation", "show", inv_id)
    assert shown.returncode == 0 and f"{inv_id}  flaky  succeeded" in shown.stdout
    with server.client() as c:  # each attempt has its own record, logs and all
        third = c.get(f"/v1/invocations/{inv_id}-3").json()
    assert third["status"] == "succeeded" and third["trigger"] == "event"


def test_exhausted_retries_land_in_the_dlq_and_redrive_runs_them_on_the_fixed_code(server, tmp_path):
    deploy(server, tmp_path, "orders", FLAKY, "--retries", "1")
    inv_id = invoke_async(server, "orders", {"fail": 5, "order": 7})
    body = settled(server, inv_id)
    assert (body["status"], body["condition"], len(body["attempts"])) == ("dead-lettered", "RetriesExhausted", 2)
    listed = json.loads(server.cli("dlq", "ls", "orders", "--json").stdout)["messages"]
    assert [(m["invocation_id"], m["attempts"], m["error_message"]) for m in listed] == [
        (inv_id, 2, "attempt 2 fails")]
    record = json.loads(server.cli("dlq", "show", "orders", listed[0]["id"]).stdout)
    assert record["requestPayload"] == {"fail": 5, "order": 7}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "1", "functionError": "Unhandled"}
    deploy(server, tmp_path / "fixed", "orders", "def handler(event, context):\n    return {'done': event['order']}\n")
    r = server.cli("dlq", "redrive", "orders", "--json")
    [moved] = json.loads(r.stdout)["redriven"]
    again = settled(server, moved["invocation_id"])
    assert again["status"] == "succeeded" and again["trigger"] == "redrive"
    assert again["attempts"][0]["version"] == 2
    assert json.loads(server.cli("dlq", "ls", "orders", "--json").stdout)["messages"] == []


def test_destinations_chain_a_function_and_queues_with_lambdas_record(server, tmp_path):
    deploy(server, tmp_path, "sink", "def handler(event, context):\n    return event['requestContext']\n",
           "--on-success", "queue:sink-done")  # fmt: skip
    deploy(server, tmp_path, "source", FLAKY, "--retries", "0", "--on-success", "function:sink",
           "--on-failure", "queue:source-failed")  # fmt: skip
    ok = invoke_async(server, "source", {"n": 1})
    bad = invoke_async(server, "source", {"fail": 1})
    assert settled(server, ok)["destination"] == "function:sink"
    failed = settled(server, bad)
    assert (failed["status"], failed["destination"]) == ("failed", "queue:source-failed")
    deadline = time.monotonic() + 30
    while not (done := receive(server, "sink-done")) and time.monotonic() < deadline:
        time.sleep(0.1)
    [message] = done
    # sink ran with source's success record and returned its requestContext
    assert message["body"]["responsePayload"] == {
        "requestId": ok, "functionArn": "arn:mist:lambda:local:default:function:source:$LATEST",
        "condition": "Success", "approximateInvokeCount": 1}
    assert message["body"]["requestPayload"]["responsePayload"] == {"attempts": 1, "event": {"n": 1}}
    [failure] = receive(server, "source-failed")
    assert failure["body"]["requestContext"]["condition"] == "RetriesExhausted"
    assert failure["body"]["responsePayload"]["errorMessage"] == "attempt 1 fails"
    assert server.cli("queue", "delete", "source-failed", failure["id"]).returncode == 0


def test_an_idempotency_key_runs_the_event_once(server, tmp_path):
    deploy(server, tmp_path, "once", FLAKY)
    first = invoke_async(server, "once", {"n": 1}, "--idempotency-key", "pay-1")
    again = invoke_async(server, "once", {"n": 2}, "--idempotency-key", "pay-1")
    assert again == first
    assert len(settled(server, first)["attempts"]) == 1
    with server.client() as c:
        records = c.get("/v1/functions/once/invocations").json()["invocations"]
    assert [r["id"] for r in records] == [f"{first}-1"]
