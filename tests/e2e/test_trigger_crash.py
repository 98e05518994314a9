"""Issue 4's rule for event sources, tested the hard way: while objects are uploaded to mist's S3
endpoint and messages published to a Redis stream, `mist up` is killed with SIGKILL again and
again; after the last restart every object upload that succeeded and every message published
reached its function at least once (duplicates are counted, none may be lost).

Evidence that an event reached its function: the line the function printed for it, or, because
log lines still buffered in a killed process are gone with it (they are not events), the
authorities on completion: the event queue's row for the object's notification in state
"succeeded", and the Redis consumer group's acknowledgement of the message (mist acknowledges a
message only after the function succeeded for it)."""

from __future__ import annotations

import collections
import json
import sqlite3
import threading
import time
import uuid

import boto3
import pytest
import redis
from botocore.config import Config

from tests.e2e.conftest import start_server, write_function
from tests.e2e.test_triggers import free_port, log_lines

pytestmark = pytest.mark.sandbox

OBJECTS = 2_500  # at ~80 PUT/s still uploading well past the third kill (~18 s in)
MESSAGES = 2_500
KILLS = 3

SEEN = (
    "def handler(event, context):\n"
    "    for r in event['Records']:\n"
    "        print(r['s3']['object']['key'] if 's3' in r else r['body'])\n"
)


def test_no_accepted_event_is_lost_when_mist_is_killed_repeatedly(tmp_path):
    port = free_port()
    data = tmp_path / "data"
    stream = f"mist-crash-{uuid.uuid4().hex[:8]}"
    server = start_server(data, "--s3-port", str(port))
    r = redis.Redis()
    try:
        src = write_function(tmp_path / "seen", {"main.py": SEEN})
        for name in ("objects", "messages"):
            deployed = server.cli("deploy", name, str(src), "--concurrency", "8")
            assert deployed.returncode == 0, deployed.stderr
        key = json.loads(server.cli("s3", "keys", "create", "--json").stdout)
        s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                          aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
                          config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 0},
                                        connect_timeout=2, read_timeout=10))
        s3.create_bucket(Bucket="crash")
        assert server.cli("trigger", "add", "objects", "--bucket", "crash").returncode == 0
        added = server.cli("trigger", "add", "messages", "--source", "redis://127.0.0.1:6379/0", "--stream", stream,
                           "--batch-size", "100")
        assert added.returncode == 0, added.stderr

        uploaded: list[str] = []
        published: dict[str, str] = {}  # body -> stream id

        def upload() -> None:
            for i in range(OBJECTS):
                name = f"o/{i:05d}"
                while True:
                    try:
                        s3.put_object(Bucket="crash", Key=name, Body=b"x")
                        uploaded.append(name)  # accepted: the PUT answered 200
                        break
                    except Exception:  # noqa: BLE001 - mist is down or was killed mid-request: send again
                        time.sleep(0.05)

        def publish() -> None:
            for i in range(MESSAGES):
                body = f"m{i:05d}"
                published[body] = r.xadd(stream, {"body": body}).decode()
                if i % 50 == 0:
                    time.sleep(0.01)

        workers = [threading.Thread(target=upload), threading.Thread(target=publish)]
        for w in workers:
            w.start()
        for _ in range(KILLS):
            time.sleep(4.0)
            server.proc.kill()  # SIGKILL: no cleanup at all
            server.proc.wait()
            server.stop()
            server = start_server(data, "--s3-port", str(port))
        assert len(uploaded) < OBJECTS, "every upload was done before the last kill: raise OBJECTS"
        for w in workers:
            w.join(timeout=300)
        assert len(uploaded) == OBJECTS and len(published) == MESSAGES

        def delivered(function: str) -> collections.Counter:
            return collections.Counter(log_lines(server, function, limit=10_000))

        def succeeded_objects() -> set[str]:
            db = sqlite3.connect(f"file:{data / 'mist.db'}?mode=ro", uri=True)
            try:
                rows = db.execute("SELECT payload FROM events WHERE function = 'objects' AND status = 'succeeded'")
                return {rec["s3"]["object"]["key"]
                        for (payload,) in rows for rec in json.loads(payload)["Records"]}
            finally:
                db.close()

        def acknowledged_messages() -> set[str]:
            group = r.xinfo_groups(stream)[0]
            last = tuple(int(x) for x in group["last-delivered-id"].decode().split("-"))
            pending = {p["message_id"].decode() for p in r.xpending_range(stream, group["name"], "-", "+", 10_000)}
            return {body for body, sid in published.items()
                    if tuple(int(x) for x in sid.split("-")) <= last and sid not in pending}

        deadline = time.monotonic() + 180
        while True:
            got_objects, got_messages = delivered("objects"), delivered("messages")
            lost_objects = set(uploaded) - set(got_objects)
            lost_messages = set(published) - set(got_messages)
            if lost_objects:
                lost_objects -= succeeded_objects()
            if lost_messages:
                lost_messages -= acknowledged_messages()
            if not lost_objects and not lost_messages or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        duplicates = sum(n - 1 for n in got_objects.values()) + sum(n - 1 for n in got_messages.values())
        print(f"objects {len(uploaded)}, messages {len(published)}, duplicates seen in logs {duplicates}, "
              f"lost {len(lost_objects)} + {len(lost_messages)}")
        assert not lost_objects, sorted(lost_objects)[:10]
        assert not lost_messages, sorted(lost_messages)[:10]
    finally:
        server.stop()
        r.delete(stream)
        r.close()
