"""Triggers in a real `mist up`: S3 uploads and deletes, a Redis stream and RabbitMQ reach functions
in real sandboxes; `mist trigger ls` reports; a failing message ends in the function's DLQ."""

from __future__ import annotations

import json
import socket
import time
import uuid

import boto3
import pytest
import redis
from botocore.config import Config

from tests.e2e.conftest import start_server, write_function

pytestmark = pytest.mark.sandbox

ECHO = (
    "import json\n"
    "def handler(event, context):\n"
    "    for r in event.get('Records', []):\n"
    "        if 's3' in r:\n"
    "            print('S3', r['eventName'], r['s3']['bucket']['name'], r['s3']['object']['key'])\n"
    "        else:\n"
    "            print('MSG', r['eventSource'], r['body'])\n"
    "    failed = [r['messageId'] for r in event.get('Records', []) if r.get('body') == 'poison']\n"
    "    return {'batchItemFailures': [{'itemIdentifier': i} for i in failed]}\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_lines(server, function: str, limit: int = 1000) -> list[str]:
    with server.client() as c:
        r = c.get(f"/v1/functions/{function}/logs", params={"limit": limit})
    assert r.status_code == 200, r.text
    return [json.loads(line)["text"] for line in r.text.splitlines() if line.strip()]


def s3_lines(server) -> list[str]:
    return [x for x in log_lines(server, "echo") if x.startswith("S3")]


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    return predicate()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    port = free_port()
    server = start_server(tmp_path_factory.mktemp("triggers") / "data", "--s3-port", str(port))
    src = write_function(tmp_path_factory.mktemp("echo"), {"main.py": ECHO})
    assert server.cli("deploy", "echo", str(src)).returncode == 0
    yield server
    assert server.stop() == 0


def test_objects_created_and_deleted_reach_the_function_as_s3_notifications(s3_server):
    server = s3_server
    key = json.loads(server.cli("s3", "keys", "create", "--json").stdout)
    s3 = boto3.client("s3", endpoint_url=server.s3_url, region_name="us-east-1",
                      aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
                      config=Config(s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket="photos")
    added = server.cli("trigger", "add", "echo", "--bucket", "photos", "--suffix", ".jpg", "--json")
    assert added.returncode == 0, added.stderr
    trigger = json.loads(added.stdout)
    assert trigger["kind"] == "s3" and trigger["config"]["suffix"] == ".jpg"

    s3.put_object(Bucket="photos", Key="cats/tom cat.jpg", Body=b"x" * 10)
    s3.put_object(Bucket="photos", Key="notes.txt", Body=b"not a photo")
    s3.delete_object(Bucket="photos", Key="cats/tom cat.jpg")
    lines = wait_for(lambda: s3_lines(server) if len(s3_lines(server)) >= 2 else None)
    # S3 URL-encodes keys in notifications as S3 does (a space is "+")
    assert sorted(lines) == ["S3 ObjectCreated:Put photos cats/tom+cat.jpg", "S3 ObjectRemoved:Delete photos cats/tom+cat.jpg"]

    listed = server.cli("trigger", "ls", "echo")
    assert trigger["id"] in listed.stdout and "bucket photos" in listed.stdout
    status = json.loads(server.cli("trigger", "show", trigger["id"], "--json").stdout)["status"]
    assert status["delivered"] == 2 and status["state"] == "active"
    assert server.cli("trigger", "rm", trigger["id"]).returncode == 0
    s3.put_object(Bucket="photos", Key="later.jpg", Body=b"y")
    time.sleep(1.0)
    assert not [x for x in log_lines(server, "echo") if "later.jpg" in x]  # removed: no more deliveries


def test_redis_stream_messages_are_delivered_and_a_poison_message_is_dead_lettered(s3_server):
    server = s3_server
    stream = f"mist-e2e-{uuid.uuid4().hex[:8]}"
    r = redis.Redis()
    try:
        added = server.cli("trigger", "add", "echo", "--source", "redis://127.0.0.1:6379/0", "--stream", stream,
                           "--max-attempts", "2", "--json")
        assert added.returncode == 0, added.stderr
        trigger = json.loads(added.stdout)
        assert trigger["status"]["state"] == "connected"
        for body in ("one", "poison", "two"):
            r.xadd(stream, {"body": body})
        got = wait_for(lambda: {x for x in log_lines(server, "echo") if x.startswith("MSG mist:redis")} >= {
            "MSG mist:redis one", "MSG mist:redis two"})
        assert got
        dlq = wait_for(lambda: json.loads(server.cli("dlq", "ls", "echo", "--json").stdout).get("messages") or None)
        assert dlq and dlq[0]["error_type"] == "Trigger.MessageFailed" and dlq[0]["attempts"] == 2
        status = json.loads(server.cli("trigger", "show", trigger["id"], "--json").stdout)["status"]
        assert status["dead_lettered"] == 1
    finally:
        r.delete(stream)
        r.close()


def test_a_broker_that_is_down_is_reported_not_fatal(s3_server):
    server = s3_server
    added = server.cli("trigger", "add", "echo", "--source", f"redis://127.0.0.1:{free_port()}/0", "--stream", "x",
                       "--json")
    assert added.returncode == 0, added.stderr
    trigger = json.loads(added.stdout)
    assert trigger["status"]["state"] == "reconnecting" and trigger["status"]["last_error"]
    with server.client() as c:
        assert c.get("/healthz").status_code == 200
    assert server.cli("trigger", "rm", trigger["id"]).returncode == 0


def test_schedules_are_listed_with_their_next_fire_and_bad_ones_refused(s3_server):
    server = s3_server
    added = server.cli("trigger", "add", "echo", "--cron", "*/5 * * * *", "--json")
    assert added.returncode == 0, added.stderr
    trigger = json.loads(added.stdout)
    assert trigger["status"]["next_fire"].endswith(("0:00Z", "5:00Z"))
    bad = server.cli("trigger", "add", "echo", "--cron", "every five minutes")
    assert bad.returncode != 0 and "cron" in bad.stderr
    missing = server.cli("trigger", "add", "nope", "--rate", "5 minutes")
    assert missing.returncode != 0 and "nope" in missing.stderr
    assert server.cli("trigger", "rm", trigger["id"]).returncode == 0


def test_deleting_a_function_removes_its_triggers(s3_server, tmp_path):
    server = s3_server
    src = write_function(tmp_path / "gone", {"main.py": ECHO})
    assert server.cli("deploy", "gone", str(src)).returncode == 0
    added = json.loads(server.cli("trigger", "add", "gone", "--rate", "5 minutes", "--json").stdout)
    assert server.cli("rm", "gone").returncode == 0
    listed = json.loads(server.cli("trigger", "ls", "--json").stdout)["triggers"]
    assert added["id"] not in [t["id"] for t in listed]
