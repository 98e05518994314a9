"""The ObjectStore on SQLite and on the real PostgreSQL: metadata, the outbox written in the same
transaction, and what a crash or a cut-off upload leaves (nothing visible, nothing kept)."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import threading

import pytest
import sqlalchemy as sa

from mist.errors import MistError
from mist.s3 import ObjectMeta, ObjectStore
from mist.s3 import db as tables
from mist.s3.model import Caller
from mist.s3.multipart import multipart_etag
from mist.s3.outbox import MemoryOutbox
from tests.s3.conftest import unique

ME = Caller("default", "MISTTESTKEY", "127.0.0.1", "REQ1")


def put(store: ObjectStore, bucket: str, key: str, data: bytes, meta: ObjectMeta | None = None):  # noqa: ANN201
    blob = store.writer()
    blob.write(data)
    blob.finish()
    return store.put_object(ME, bucket, key, blob, hashlib.md5(data).hexdigest(), meta or ObjectMeta())


def read(store: ObjectStore, bucket: str, key: str) -> bytes:
    _, reader = store.open_object(ME, bucket, key)
    try:
        return b"".join(iter(lambda: reader.read(1 << 16), b""))
    finally:
        reader.close()


def blob_files(store: ObjectStore) -> list:
    return [p for p in store.root.rglob("*") if p.is_file() and p.parent.parent.name == "blobs"]


def events_of(store: ObjectStore, bucket: str) -> list[tuple[str, str]]:
    found = asyncio.run(store.outbox.pending_events(1000))
    return [(e.event_name, e.key) for e in found if e.bucket == bucket]


def test_objects_round_trip_with_metadata(store):
    b = unique("b")
    store.create_bucket(ME, b)
    meta = ObjectMeta("text/plain", {"a": "1"}, {"cache-control": "no-cache"})
    info = put(store, b, "dir/ü key", b"hello", meta)
    got = store.get_object(ME, b, "dir/ü key")
    assert (got.size, got.etag, got.meta) == (5, hashlib.md5(b"hello").hexdigest(), meta)
    assert got.last_modified == info.last_modified
    assert read(store, b, "dir/ü key") == b"hello"


def test_overwrite_and_delete_free_the_old_data(store):
    b = unique("b")
    store.create_bucket(ME, b)
    put(store, b, "k", b"one")
    put(store, b, "k", b"two")
    assert read(store, b, "k") == b"two" and len(blob_files(store)) == 1
    assert store.delete_object(ME, b, "k") is True
    assert store.delete_object(ME, b, "k") is False
    assert blob_files(store) == []


def test_listing_orders_keys_by_utf8_bytes_on_every_backend(store):
    b = unique("b")
    store.create_bucket(ME, b)
    keys = ["B", "a", "a/b", "a/é", "a/z", "ä", "Z", "\U0001f600", "a-b", "a.b"]
    for k in keys:
        put(store, b, k, b"")
    page = store.list_objects(ME, b)
    assert [e.key for e in page.contents] == sorted(keys, key=lambda k: k.encode())
    page = store.list_objects(ME, b, prefix="a/", delimiter="/", max_keys=2)
    assert [e.key for e in page.contents] == ["a/b", "a/z"] and page.truncated
    assert [e.key for e in store.list_objects(ME, b, prefix="a/", start_after="a/z").contents] == ["a/é"]


def test_bucket_rules(store):
    b = unique("b")
    store.create_bucket(ME, b)
    cases = [
        (lambda: store.create_bucket(ME, b), "BucketAlreadyOwnedByYou"),
        (lambda: store.create_bucket(Caller("other"), b), "BucketAlreadyExists"),
        (lambda: store.get_object(Caller("other"), b, "k"), "NoSuchBucket"),  # invisible to other tenants
        (lambda: store.get_object(ME, b, "k"), "NoSuchKey"),
        (lambda: store.get_object(ME, unique("b"), "k"), "NoSuchBucket"),
    ]
    for call, code in cases:
        with pytest.raises(MistError) as exc:
            call()
        assert exc.value.code == code
    assert b in [x.name for x in store.list_buckets(ME)]
    assert b not in [x.name for x in store.list_buckets(Caller("other"))]
    put(store, b, "k", b"x")
    with pytest.raises(MistError) as exc:
        store.delete_bucket(ME, b)
    assert exc.value.code == "BucketNotEmpty"


def test_deleting_a_bucket_aborts_its_uploads(store):
    b = unique("b")
    store.create_bucket(ME, b)
    upload_id = store.uploads.create(ME, b, "k", ObjectMeta())
    blob = store.writer()
    blob.write(b"part")
    blob.finish()
    store.uploads.put_part(ME, b, "k", upload_id, 1, blob, hashlib.md5(b"part").hexdigest())
    store.delete_bucket(ME, b)
    assert blob_files(store) == []


def test_multipart_objects_are_their_parts_without_a_copy(store):
    b = unique("b")
    store.create_bucket(ME, b)
    upload_id = store.uploads.create(ME, b, "mp", ObjectMeta("video/mp4"))
    parts = [b"x" * (5 * 1024 * 1024), b"tail"]
    etags = []
    for n, data in enumerate(parts, 1):
        blob = store.writer()
        blob.write(data)
        blob.finish()
        etags.append(store.uploads.put_part(ME, b, "mp", upload_id, n, blob, hashlib.md5(data).hexdigest()).etag)
    info = store.uploads.complete(ME, b, "mp", upload_id, list(enumerate(etags, 1)))
    assert info.etag == multipart_etag(etags) and info.etag.endswith("-2")
    assert info.meta.content_type == "video/mp4" and len(blob_files(store)) == 2
    assert read(store, b, "mp") == b"".join(parts)
    assert events_of(store, b) == [("ObjectCreated:CompleteMultipartUpload", "mp")]


def test_every_change_writes_its_event_and_failures_write_none(store):
    b = unique("b")
    store.create_bucket(ME, b)
    put(store, b, "a", b"1")
    src, reader = store.open_object(ME, b, "a")
    store.copy_object(ME, src, reader, b, "copy", src.meta)
    reader.close()
    store.delete_objects(ME, b, ["a", "missing", "k" * 1100])
    for failing in (
        lambda: put(store, unique("gone"), "k", b"x"),
        lambda: put(store, b, "k" * 1025, b"x"),
        lambda: store.uploads.complete(ME, b, "k", "no-such-upload", [(1, "0" * 32)]),
    ):
        with pytest.raises(MistError):
            failing()

    assert events_of(store, b) == [
        ("ObjectCreated:Put", "a"), ("ObjectCreated:Copy", "copy"), ("ObjectRemoved:Delete", "a"),
    ]


def test_concurrent_writers_of_one_key_leave_one_object_and_ordered_events(store):
    b = unique("b")
    store.create_bucket(ME, b)
    errors = []

    def writer(n: int) -> None:
        try:
            for i in range(5):
                put(store, b, "hot", f"{n}-{i}".encode())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(blob_files(store)) == 1 and len(store.list_objects(ME, b).contents) == 1
    found = [e for e in asyncio.run(store.outbox.pending_events(1000)) if e.bucket == b]
    assert len(found) == 20
    last = store.get_object(ME, b, "hot")
    assert found[-1].record["s3"]["object"]["eTag"] == last.etag  # the newest event is the object's state


def test_writers_committed_together_succeed_or_fail_each_on_their_own(store):
    """Concurrent writes share a commit (group commit); one refused does not undo the others."""
    from mist.s3.rules import write_precondition

    b = unique("b")
    store.create_bucket(ME, b)
    for i in range(0, 24, 2):
        put(store, b, f"k{i}", b"existing")
    create_only = write_precondition({"if-none-match": "*"})
    outcomes: dict[int, str] = {}

    def writer(i: int) -> None:
        blob = store.writer()
        blob.write(b"new")
        blob.finish()
        try:
            store.put_object(ME, b, f"k{i}", blob, hashlib.md5(b"new").hexdigest(), ObjectMeta(), precondition=create_only)
            outcomes[i] = "created"
        except MistError as exc:
            blob.abort()
            outcomes[i] = exc.code

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert outcomes == {i: "PreconditionFailed" if i % 2 == 0 else "created" for i in range(24)}
    for i in range(24):
        assert read(store, b, f"k{i}") == (b"existing" if i % 2 == 0 else b"new")
    created = [k for name, k in events_of(store, b)[12:] if name == "ObjectCreated:Put"]
    assert sorted(created) == sorted(f"k{i}" for i in range(1, 24, 2))
    assert len(blob_files(store)) == 24


# -- crashes and cut-off uploads ------------------------------------------------------------------


CRASH = """
import os, sys
from pathlib import Path
from mist.s3 import ObjectStore
from mist.s3.model import Caller
data, url, schema, bucket = sys.argv[1:5]
store = ObjectStore(Path(data), url, schema=schema or None)
store.create_bucket(Caller(), bucket)
written = store.writer()        # a body that arrived whole, fsync'd and moved into place...
written.write(b"never committed")
written.finish()
partial = store.writer()        # ...and one still arriving
partial.write(b"half a bo")
os._exit(9)                     # the process dies before any metadata transaction
"""


def test_a_crash_before_commit_leaves_nothing_visible_and_is_cleaned_up_on_start(backend, tmp_path):
    store = backend()
    b = unique("b")
    url = str(store.db.engine.url.render_as_string(hide_password=False))
    schema = (store.db.engine.get_execution_options().get("schema_translate_map") or {}).get(None) or ""
    crashed = subprocess.run([sys.executable, "-c", CRASH, str(store.root.parent), url, schema, b], timeout=60)
    assert crashed.returncode == 9
    assert len(blob_files(store)) == 1 and len(list((store.root / "tmp").iterdir())) == 1

    restarted = backend()

    assert restarted.recovered == 2
    assert blob_files(restarted) == [] and list((restarted.root / "tmp").iterdir()) == []
    assert restarted.list_objects(ME, b).contents == [] and events_of(restarted, b) == []


def test_an_aborted_upload_leaves_no_file(store):
    blob = store.writer()
    blob.write(b"cut off")
    blob.abort()
    assert blob_files(store) == [] and list((store.root / "tmp").iterdir()) == []


# -- the outbox -----------------------------------------------------------------------------------


def outboxes(store: ObjectStore, b: str):  # noqa: ANN201
    """The real outbox after two puts, and the in-memory fake given the same events."""
    memory = MemoryOutbox()
    for key in ("one", "two"):
        put(store, b, key, b"x")
        memory.add(b, key, "ObjectCreated:Put", size=1, etag=hashlib.md5(b"x").hexdigest())
    return [store.outbox, memory]


async def test_events_stay_pending_until_acknowledged(store):
    b = unique("b")
    await asyncio.to_thread(store.create_bucket, ME, b)
    for outbox in await asyncio.to_thread(outboxes, store, b):
        first = [e for e in await outbox.pending_events(10) if e.bucket == b]
        assert [e.key for e in first] == ["one", "two"]
        assert [e.key for e in await outbox.pending_events(10) if e.bucket == b] == ["one", "two"]  # redelivered
        await outbox.ack_events([first[0].id])
        assert [e.key for e in await outbox.pending_events(10) if e.bucket == b] == ["two"]
        await outbox.ack_events([first[1].id, first[1].id, 10**9])  # twice, and an unknown id: harmless
        assert [e for e in await outbox.pending_events(10) if e.bucket == b] == []


async def test_events_come_oldest_first_and_limit_applies(store):
    b = unique("b")
    await asyncio.to_thread(store.create_bucket, ME, b)
    for outbox in await asyncio.to_thread(outboxes, store, b):
        mine = [e for e in await outbox.pending_events(1000) if e.bucket == b]
        assert [e.id for e in mine] == sorted(e.id for e in mine)
        assert len(await outbox.pending_events(1)) == 1
        assert mine[0].record["eventName"] == "ObjectCreated:Put" and mine[0].created_at.tzinfo is not None


async def test_event_ids_are_never_reused_after_acknowledgement(store):
    b = unique("b")
    await asyncio.to_thread(store.create_bucket, ME, b)
    await asyncio.to_thread(put, store, b, "a", b"x")
    first = await store.outbox.pending_events(1000)
    await store.outbox.ack_events([e.id for e in first])  # the outbox is empty now
    await asyncio.to_thread(put, store, b, "a", b"y")
    (again,) = await store.outbox.pending_events(1000)
    assert again.id > max(e.id for e in first)
    assert again.record["s3"]["object"]["sequencer"] > first[-1].record["s3"]["object"]["sequencer"]


async def test_a_commit_wakes_a_waiting_dispatcher_at_once(store):
    b = unique("b")
    await asyncio.to_thread(store.create_bucket, ME, b)
    assert await store.outbox.wait_for_events(0.01) is True  # the first wait never misses earlier commits
    assert await store.outbox.wait_for_events(0.05) is False  # nothing new: times out

    waiting = asyncio.create_task(store.outbox.wait_for_events(30))
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.to_thread(put, store, b, "k", b"x")
    assert await waiting is True
    assert loop.time() - started < 1.0


async def test_the_memory_outbox_wakes_its_waiter_too():
    outbox = MemoryOutbox()
    await outbox.wait_for_events(0)
    waiting = asyncio.create_task(outbox.wait_for_events(30))
    await asyncio.sleep(0.01)
    outbox.add("b", "k", "ObjectRemoved:Delete")
    assert await waiting is True
    assert (await outbox.pending_events())[0].record["s3"]["object"] == {"key": "k", "sequencer": "0000000000000001"}


# -- access keys ----------------------------------------------------------------------------------


def test_access_keys_are_stored_sealed_and_listed_without_secrets(store):
    key = store.keys.create()
    assert key.secret_access_key and len(key.secret_access_key) == 40 and key.access_key_id.startswith("MIST")
    assert store.keys.lookup(key.access_key_id) == (key.secret_access_key, "default")
    listed = [k for k in store.keys.list() if k.access_key_id == key.access_key_id]
    assert listed[0].secret_access_key is None and "secret_access_key" not in listed[0].to_json()
    with store.db.read() as conn:
        raw = conn.execute(sa.select(tables.access_keys.c.secret)).scalars().all()
    assert key.secret_access_key not in " ".join(raw)
    store.keys.delete(key.access_key_id)
    assert store.keys.lookup(key.access_key_id) is None
    with pytest.raises(MistError) as exc:
        store.keys.delete(key.access_key_id)
    assert exc.value.code == "NotFound"
