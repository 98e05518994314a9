"""Triggers: validation, S3 filters, the store, and the manager's delivery rules with fakes
(the outbox is mist.s3's shipped MemoryOutbox; queue triggers read a real Redis stream)."""

import asyncio
import json
import uuid
from datetime import datetime, timezone

import pytest
import redis

from mist.control.triggers import (
    MemoryTriggerStore,
    SqlTriggerStore,
    Trigger,
    TriggerManager,
    broker_allowed,
    redact,
    s3_matches,
    validate_config,
)
from mist.errors import Forbidden, InvalidRequest, NotFound
from mist.s3.outbox import MemoryOutbox


class Enqueued:
    """A fake EventService.enqueue that honours idempotency keys like the real one."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[str, dict, str, str | None]] = []
        self.keys: dict[tuple[str, str], str] = {}
        self.fail_first = fail_first
        self.functions = {"thumb", "tick", "orders"}

    async def __call__(self, function, payload, *, trigger, idempotency_key=None, source_event_id=None):
        if self.fail_first:
            self.fail_first -= 1
            raise RuntimeError("database is locked")
        if function not in self.functions:
            raise NotFound(f"no function {function!r}")
        if idempotency_key and (function, idempotency_key) in self.keys:
            return self.keys[(function, idempotency_key)]
        inv = uuid.uuid4().hex
        if idempotency_key:
            self.keys[(function, idempotency_key)] = inv
        self.calls.append((function, json.loads(payload), trigger, idempotency_key))
        return inv


async def exists(name: str) -> None:
    if name not in {"thumb", "tick", "orders", "acme/orders"}:
        raise NotFound(f"no function {name!r}")


def manager(store=None, *, enqueue=None, outbox=None, clock=None, invoke=None, dead=None) -> TriggerManager:
    async def no_invoke(function, payload):
        raise AssertionError("no queue trigger expected")

    async def no_dead(function, record):
        raise AssertionError("no dead letter expected")

    return TriggerManager(store or MemoryTriggerStore(), enqueue=enqueue or Enqueued(), invoke=invoke or no_invoke,
                          dead_letter=dead or no_dead, function_exists=exists, outbox=outbox,
                          clock=clock or (lambda: 1_700_000_000.0))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"kind": "sms"}, "kind must be one of s3, cron, queue"),
        ({"kind": "s3", "bucket": "A_B"}, "bucket must be an S3 bucket name"),
        ({"kind": "s3", "bucket": "photos", "events": ["s3:ObjectCreated:Post"]}, "is not an S3 event type"),
        ({"kind": "s3", "bucket": "photos", "colour": "red"}, "a s3 trigger has no option 'colour'"),
        ({"kind": "cron"}, "exactly one of cron"),
        ({"kind": "cron", "cron": "* * *", "rate": "5 minutes"}, "exactly one of cron"),
        ({"kind": "cron", "cron": "every day"}, "cron"),
        ({"kind": "cron", "rate": "5 fortnights"}, "rate"),
        ({"kind": "cron", "rate": "5 minutes", "missed": "all"}, "missed must be one of skip, once"),
        ({"kind": "queue"}, "source is required"),
        ({"kind": "queue", "source": "kafka://x", "topic": "t"}, "unknown scheme"),
        ({"kind": "queue", "source": "redis://127.0.0.1", "queue": "q"}, "stream"),
        ({"kind": "queue", "source": "redis://127.0.0.1", "stream": "s", "batch_size": 0}, "batch_size"),
    ],
)
def test_bad_triggers_are_refused_saying_what_is_wrong(body, message):
    with pytest.raises(InvalidRequest, match=message):
        validate_config(body)


def test_configs_are_normalized():
    assert validate_config({"kind": "s3", "bucket": "photos"}) == (
        "s3", {"bucket": "photos", "events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"], "prefix": "", "suffix": ""})
    assert validate_config({"kind": "s3", "bucket": "photos", "events": "s3:ObjectCreated:Put, s3:ObjectCreated:Put",
                            "suffix": ".jpg"})[1]["events"] == ["s3:ObjectCreated:Put"]
    assert validate_config({"kind": "cron", "rate": "5 minutes"}) == (
        "cron", {"cron": None, "rate": "5 minutes", "missed": "skip"})


@pytest.mark.parametrize(
    ("events", "prefix", "suffix", "event", "key", "expected"),
    [
        (["s3:ObjectCreated:*"], "", "", "ObjectCreated:Put", "a.jpg", True),
        (["s3:ObjectCreated:*"], "", "", "ObjectCreated:CompleteMultipartUpload", "a.jpg", True),
        (["s3:ObjectCreated:*"], "", "", "ObjectRemoved:Delete", "a.jpg", False),
        (["s3:ObjectCreated:Copy"], "", "", "ObjectCreated:Put", "a.jpg", False),
        (["s3:ObjectRemoved:Delete"], "", "", "ObjectRemoved:Delete", "a.jpg", True),
        (["s3:ObjectCreated:*"], "uploads/", ".jpg", "ObjectCreated:Put", "uploads/x/a.jpg", True),
        (["s3:ObjectCreated:*"], "uploads/", ".jpg", "ObjectCreated:Put", "other/a.jpg", False),
        (["s3:ObjectCreated:*"], "uploads/", ".jpg", "ObjectCreated:Put", "uploads/a.png", False),
    ],
)
def test_s3_filters(events, prefix, suffix, event, key, expected):
    config = {"bucket": "photos", "events": events, "prefix": prefix, "suffix": suffix}
    assert s3_matches(config, "photos", event, key) is expected
    assert s3_matches(config, "other", event, key) is False


def test_a_queue_source_password_is_never_shown():
    assert redact("amqp://guest:secret@127.0.0.1:5672/") == "amqp://guest:***@127.0.0.1:5672/"
    t = Trigger("trg-1", "orders", "queue", {"source": "redis://:pw@127.0.0.1:6379/0", "stream": "s"}, 0.0)
    assert "pw" not in json.dumps(t.public_config())


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryTriggerStore()
        return
    import sqlalchemy as sa

    url = request.getfixturevalue("fresh_pg_url") if request.param == "postgresql" else \
        f"sqlite:///{tmp_path / 'triggers.db'}"
    engine = sa.create_engine(url)
    yield SqlTriggerStore(engine)
    engine.dispose()


def test_store_contract(store):
    a = Trigger("trg-a", "thumb", "s3", {"bucket": "photos"}, 10.0)
    b = Trigger("trg-b", "tick", "cron", {"rate": "5 minutes"}, 20.0)
    store.add_trigger(b)
    store.add_trigger(a)
    assert [t.id for t in store.list_triggers()] == ["trg-a", "trg-b"]
    store.set_last_fired("trg-b", 300.0)
    store.set_last_fired("trg-b", 200.0)  # never backwards
    assert store.list_triggers()[1].last_fired == 300.0
    assert store.delete_trigger("trg-a") and not store.delete_trigger("trg-a")
    assert [t.id for t in store.list_triggers()] == ["trg-b"]


def outbox_event(outbox: MemoryOutbox, key: str, event: str = "ObjectCreated:Put", bucket: str = "photos"):
    return outbox.add(bucket, key, event)


async def test_s3_events_become_one_invocation_per_matching_trigger_and_are_acked_after():
    outbox, enqueue = MemoryOutbox(), Enqueued()
    m = manager(enqueue=enqueue, outbox=outbox)
    jpg = await m.add("thumb", {"kind": "s3", "bucket": "photos", "suffix": ".jpg", "events": ["s3:ObjectCreated:*"]})
    every = await m.add("tick", {"kind": "s3", "bucket": "photos", "events": ["s3:ObjectRemoved:*"]})
    outbox_event(outbox, "a.jpg")
    outbox_event(outbox, "b.png")
    outbox_event(outbox, "a.jpg", "ObjectRemoved:Delete")
    events = await outbox.pending_events()
    assert await m.deliver_s3(events) == 2
    assert [(f, e["Records"][0]["eventName"], trig) for f, e, trig, _ in enqueue.calls] == [
        ("thumb", "ObjectCreated:Put", "s3"), ("tick", "ObjectRemoved:Delete", "s3")]
    assert enqueue.calls[0][3] == f"s3:{events[0].id}:{jpg.trigger.id}"
    # delivered again (a crash before the ack): the idempotency keys make it a no-op
    assert await m.deliver_s3(events) == 2 and len(enqueue.calls) == 2
    assert m.get(every.trigger.id).status["delivered"] == 2


async def test_the_s3_loop_keeps_events_until_they_are_enqueued():
    outbox, enqueue = MemoryOutbox(), Enqueued(fail_first=2)
    m = manager(enqueue=enqueue, outbox=outbox)
    await m.add("thumb", {"kind": "s3", "bucket": "photos"})
    await m.start()
    try:
        outbox_event(outbox, "x.jpg")
        for _ in range(200):
            if enqueue.calls and not await outbox.pending_events():
                break
            await asyncio.sleep(0.02)
        assert len(enqueue.calls) == 1 and await outbox.pending_events() == []
    finally:
        await m.stop()


async def test_triggers_need_an_existing_function_and_s3_needs_the_endpoint():
    m = manager()
    with pytest.raises(NotFound):
        await m.add("nope", {"kind": "cron", "rate": "1 minute"})
    with pytest.raises(InvalidRequest, match="--s3-port"):
        await m.add("thumb", {"kind": "s3", "bucket": "photos"})


@pytest.mark.parametrize(
    ("tenant", "source", "allowed", "ok"),
    [
        ("default", "redis://127.0.0.1:6379/0", [], True),  # the operator's own tenant
        ("acme", "redis://127.0.0.1:6379/0", [], False),  # mist's host services stay out of reach
        ("acme", "redis://broker.internal:6379/0", ["broker.internal"], True),
        ("acme", "nats://broker.internal:4222", ["broker.internal:4222"], True),
        ("acme", "nats://broker.internal:4223", ["broker.internal:4222"], False),
        ("acme", "amqp://guest:guest@10.0.0.5:5672/", ["10.0.0.5:5672"], True),
        ("acme", "redis://10.0.0.5:notaport/0", ["10.0.0.5"], False),
    ],
)
def test_tenants_other_than_the_default_read_only_brokers_the_operator_allows(tenant, source, allowed, ok):
    assert broker_allowed(tenant, source, allowed) is ok


async def test_a_queue_trigger_of_another_tenant_on_a_host_broker_is_refused_naming_the_option():
    with pytest.raises(Forbidden) as exc:
        await manager().add("acme/orders", {"kind": "queue", "source": "redis://127.0.0.1:6379/0", "stream": "o"})
    assert "--trigger-broker" in exc.value.message and "127.0.0.1:6379" in exc.value.message


async def test_cron_fires_once_per_time_even_across_a_restart():
    clock = [datetime(2026, 1, 1, 12, 0, 30, tzinfo=timezone.utc).timestamp()]
    store, enqueue = MemoryTriggerStore(), Enqueued()
    m = manager(store, enqueue=enqueue, clock=lambda: clock[0])
    t = (await m.add("tick", {"kind": "cron", "cron": "*/5 * * * *"})).trigger
    assert await m.fire_due() == 30.0  # next fire 12:05:00; the loop looks again at least every 30 s
    clock[0] += 270.5
    await m.fire_due()
    assert len(enqueue.calls) == 1
    call = enqueue.calls[0]
    assert call[1]["detail-type"] == "Scheduled Event" and call[1]["time"] == "2026-01-01T12:05:00Z"
    assert call[3] == f"cron:{t.id}:2026-01-01T12:05:00+00:00"
    await m.fire_due()  # same time again: nothing
    # a restart reads the watermark: nothing fires twice
    again = manager(store, enqueue=enqueue, clock=lambda: clock[0])
    await again.start()
    await again.fire_due()
    await again.stop()
    assert len(enqueue.calls) == 1
    assert again.get(t.id).status["next_fire"] == "2026-01-01T12:10:00Z"


async def test_a_process_follows_triggers_added_and_removed_through_another_and_fires_each_time_once():
    clock = [datetime(2026, 1, 1, 12, 0, 30, tzinfo=timezone.utc).timestamp()]
    store, enqueue = MemoryTriggerStore(), Enqueued()  # one database, one event store (its idempotency keys)
    a, b = (manager(store, enqueue=enqueue, clock=lambda: clock[0]) for _ in range(2))
    await a.start()
    await b.start()
    try:
        t = (await a.add("tick", {"kind": "cron", "cron": "*/5 * * * *"})).trigger
        assert b.list() == []  # b holds its triggers in memory...
        assert await b.follow() == [t.id]  # ...until it follows
        assert [v.trigger.id for v in b.list()] == [t.id]
        clock[0] += 270.5
        await a.fire_due()
        await b.fire_due()
        assert len(enqueue.calls) == 1  # both fired 12:05; the idempotency key made it one event
        await a.remove(t.id)
        assert await b.follow() == [t.id] and b.list() == []
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.parametrize(("missed", "expected"), [("skip", []), ("once", ["2026-01-01T12:15:00Z"])])
async def test_fires_missed_while_down_are_skipped_or_run_once(missed, expected):
    clock = [datetime(2026, 1, 1, 12, 0, 10, tzinfo=timezone.utc).timestamp()]
    store, enqueue = MemoryTriggerStore(), Enqueued()
    m = manager(store, enqueue=enqueue, clock=lambda: clock[0])
    await m.add("tick", {"kind": "cron", "cron": "*/5 * * * *", "missed": missed})
    clock[0] += 17 * 60  # down from 12:00 to 12:17: 12:05, 12:10, 12:15 missed
    await m.fire_due()
    assert [c[1]["time"] for c in enqueue.calls] == expected


async def test_queue_trigger_invokes_per_batch_acks_on_success_and_dead_letters_failures():
    r = redis.Redis()
    stream = f"mist-test-{uuid.uuid4().hex[:8]}"
    seen: list[list[str]] = []
    dead: list[tuple[str, dict]] = []

    async def invoke(function, payload):
        event = json.loads(payload)
        bodies = [rec["body"] for rec in event["Records"]]
        seen.append(bodies)
        failed = [rec["messageId"] for rec in event["Records"] if rec["body"] == "poison"]
        return json.dumps({"batchItemFailures": [{"itemIdentifier": i} for i in failed]}).encode()

    async def dead_letter(function, record):
        dead.append((function, record))

    m = manager(invoke=invoke, dead=dead_letter)
    try:
        view = await m.add("orders", {"kind": "queue", "source": "redis://127.0.0.1:6379/0", "stream": stream,
                                      "batch_size": 10, "max_attempts": 2})
        await m.start()
        # add() returned: the consumer exists, so nothing published from now on is missed
        for body in ("a", "poison", "b"):
            r.xadd(stream, {"body": body})
        for _ in range(300):
            if dead:
                break
            await asyncio.sleep(0.05)
        assert dead and dead[0][0] == "orders" and dead[0][1]["requestPayload"]["Records"][0]["body"] == "poison"
        assert dead[0][1]["requestContext"]["approximateInvokeCount"] == 2
        delivered = [b for batch in seen for b in batch]
        assert delivered.count("a") == 1 and delivered.count("b") == 1 and delivered.count("poison") == 2
        status = m.get(view.trigger.id).status
        assert status["state"] == "connected" and status["dead_lettered"] == 1
    finally:
        await m.stop()
        r.delete(stream)
        r.close()


async def test_two_triggers_on_one_stream_each_get_every_message():
    r = redis.Redis()
    stream = f"mist-test-{uuid.uuid4().hex[:8]}"
    seen: dict[str, list[str]] = {"orders": [], "tick": []}

    async def invoke(function, payload):
        seen[function] += [rec["body"] for rec in json.loads(payload)["Records"]]
        return b"null"

    m = manager(invoke=invoke)
    try:
        for function in ("orders", "tick"):
            await m.add(function, {"kind": "queue", "source": "redis://127.0.0.1:6379/0", "stream": stream})
        await m.start()
        for body in ("a", "b", "c"):
            r.xadd(stream, {"body": body})
        for _ in range(200):
            if len(seen["orders"]) == 3 and len(seen["tick"]) == 3:
                break
            await asyncio.sleep(0.05)
        assert sorted(seen["orders"]) == sorted(seen["tick"]) == ["a", "b", "c"]
    finally:
        await m.stop()
        r.delete(stream)
        r.close()
