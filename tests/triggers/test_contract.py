"""The Connector contract, one suite run against every real broker and the in-memory fake."""

from __future__ import annotations

import asyncio

from mist.triggers.connectors import ConnectorState
from tests.triggers.brokers import Harness
from tests.triggers.conftest import FAST, Recorder, fail_first_delivery, running, until


def bodies(n: int, prefix: str = "m") -> list[bytes]:
    return [f"{prefix}{i}".encode() for i in range(n)]


async def test_messages_arrive_in_publish_order_in_batches_and_are_acknowledged(harness: Harness, target, group):
    spec = harness.spec(target, group, tuning=FAST, batch_size=4, max_consumers=1)
    rec = Recorder()
    async with running(harness.connector(spec), rec):
        await harness.publish(target, bodies(10), headers={"tenant": "acme"})
        await until(lambda: len(rec.bodies()) >= 10, what="10 messages")
    assert rec.bodies() == bodies(10)
    assert all(1 <= len(batch) <= 4 for batch in rec.batches)
    first = rec.batches[0][0]
    assert first.source == spec.source and first.delivery_count == 1
    assert len({m.id for batch in rec.batches for m in batch}) == 10
    if harness.kind != "mqtt":  # MQTT 3/5 without user properties on publish here
        assert first.headers.get("tenant") == "acme"

    again = Recorder()  # acknowledged: a new connector on the same group gets nothing
    async with running(harness.connector(spec), again):
        await asyncio.sleep(0.3)
    assert again.batches == []


async def test_a_batch_window_gathers_messages_that_arrive_within_it(harness: Harness, target, group):
    spec = harness.spec(target, group, tuning=FAST, batch_size=10, batch_window_s=0.6, max_consumers=1)
    rec = Recorder()
    async with running(harness.connector(spec), rec):
        for body in bodies(3):
            await harness.publish(target, [body])
            await asyncio.sleep(0.05)
        await until(lambda: len(rec.bodies()) >= 3, what="3 messages")
    assert [len(b) for b in rec.batches] == [3]


async def test_a_failed_batch_is_redelivered_and_acknowledged_only_after_success(harness: Harness, target, group):
    spec = harness.spec(target, group, tuning=FAST, batch_size=3, batch_window_s=0.3, max_consumers=1)
    rec = Recorder(fail_first_delivery)
    connector = harness.connector(spec)
    async with running(connector, rec):
        await harness.publish(target, bodies(3))
        await until(lambda: len(rec.bodies()) >= 6, what="the batch twice")
        await until(lambda: connector.status().delivered == 3, what="3 acknowledged")
    assert sorted(rec.bodies()) == sorted(bodies(3) * 2)
    assert [m.delivery_count for m in rec.batches[-1]] == [2, 2, 2]
    status = connector.status()
    assert (status.delivered, status.failed, status.dead_lettered) == (3, 3, 0)

    again = Recorder()
    async with running(harness.connector(spec), again):
        await asyncio.sleep(0.3)
    assert again.batches == []


async def test_messages_of_a_batch_cut_off_mid_delivery_come_again(harness: Harness, target, group):
    spec = harness.spec(target, group, tuning=FAST, batch_size=3, batch_window_s=0.3, max_consumers=1)
    stuck = Recorder(lambda batch: asyncio.Event().wait())  # never returns: the invocation is in flight
    async with running(harness.connector(spec), stuck):
        await harness.publish(target, bodies(3))
        await until(lambda: len(stuck.bodies()) == 3, what="the batch in flight")
    # the connector was cancelled mid-batch (mist stopped): nothing was acknowledged
    rec = Recorder()
    async with running(harness.connector(spec), rec):
        await until(lambda: len(rec.bodies()) >= 3, what="the batch again")
    assert sorted(rec.bodies()) == bodies(3)
    if harness.has_broker_delivery_count:
        assert all(m.delivery_count >= 2 for batch in rec.batches for m in batch)


async def test_batch_item_failures_retry_only_the_listed_messages(harness: Harness, target, group):
    spec = harness.spec(target, group, tuning=FAST, batch_size=3, batch_window_s=0.3, max_consumers=1)

    def fail_m1_once(batch):
        return {m.id for m in batch if m.body == b"m1" and m.delivery_count == 1}

    rec = Recorder(fail_m1_once)
    connector = harness.connector(spec)
    async with running(connector, rec):
        await harness.publish(target, bodies(3))
        await until(lambda: len(rec.deliveries(b"m1")) == 2, what="m1 again")
        await until(lambda: connector.status().delivered == 3, what="3 acknowledged")
        await asyncio.sleep(0.1)
    assert [len(rec.deliveries(b)) for b in bodies(3)] == [1, 2, 1]
    assert rec.deliveries(b"m1")[1].delivery_count == 2
    assert rec.dead == []


async def test_a_message_is_dead_lettered_with_the_error_after_max_attempts(harness: Harness, target, group):
    spec = harness.spec(target, group, tuning=FAST, batch_size=1, max_attempts=3, max_consumers=1)

    def poison(batch):
        if batch[0].body == b"poison":
            raise ValueError("cannot parse the order")

    rec = Recorder(poison)
    connector = harness.connector(spec)
    async with running(connector, rec):
        await harness.publish(target, [b"poison", b"fine"])
        await until(lambda: len(rec.dead) == 1 and connector.status().delivered == 1, what="the dead letter")
        await asyncio.sleep(0.2)
    message, error = rec.dead[0]
    assert message.body == b"poison" and message.delivery_count == 3
    assert error == "ValueError: cannot parse the order"
    assert len(rec.deliveries(b"poison")) == 3 and len(rec.deliveries(b"fine")) == 1
    assert connector.status().dead_lettered == 1

    again = Recorder()
    async with running(harness.connector(spec), again):
        await asyncio.sleep(0.3)
    assert again.batches == []


async def test_an_unreachable_broker_is_reported_and_retried_until_it_answers(harness: Harness, target, group):
    port = await harness.outage_port()  # nothing listens there yet
    spec = harness.spec(target, group, port=port, tuning=FAST, max_consumers=1)
    connector = harness.connector(spec)
    rec = Recorder()
    try:
        async with running(connector, rec, connected=False):
            await until(lambda: connector.status().state == ConnectorState.RECONNECTING, what="reconnecting")
            error = connector.status().last_error or ""
            assert "connect" in error.lower()  # says what went wrong: "Connect call failed ..." 
            assert await connector.backlog() is None
            await harness.restore()
            await until(lambda: connector.status().state == ConnectorState.CONNECTED, what="connected")
            await harness.publish(target, bodies(3))
            await until(lambda: len(rec.bodies()) >= 3, what="3 messages")
    finally:
        await harness.cut()
    assert sorted(rec.bodies()) == bodies(3)


async def test_dropped_connections_are_reestablished_without_losing_messages(harness: Harness, target, group):
    port = await harness.outage_port()
    await harness.restore()
    spec = harness.spec(target, group, port=port, tuning=FAST, max_consumers=1)
    connector = harness.connector(spec)
    rec = Recorder()
    try:
        async with running(connector, rec):
            await harness.publish(target, bodies(3, "a"))
            await until(lambda: connector.status().delivered == 3, what="the first 3")
            await harness.cut()
            await until(lambda: connector.status().state == ConnectorState.RECONNECTING, what="reconnecting")
            await harness.publish(target, bodies(3, "b"))  # straight to the broker while mist is cut off
            await harness.restore()
            await until(lambda: {b"b0", b"b1", b"b2"} <= set(rec.bodies()), what="the 3 sent while cut off")
    finally:
        await harness.cut()
    assert set(rec.bodies()) == set(bodies(3, "a") + bodies(3, "b"))
    assert connector.status().last_error


async def test_backlog_counts_the_messages_waiting_at_the_broker(harness: Harness, target, group):
    spec = harness.spec(target, group, tuning=FAST, batch_size=5, max_consumers=1)
    release = asyncio.Event()
    rec = Recorder(lambda batch: release.wait())
    connector = harness.connector(spec)
    async with running(connector, rec):
        await harness.publish(target, bodies(30))
        await until(lambda: len(rec.batches) == 1, what="the first batch")
        # what waits = what was published - the batch in flight - what the consumer holds ahead
        # (RabbitMQ's prefetch, MQTT's receive window: at most 2 batches here)
        in_flight = len(rec.batches[0])
        low, high = 30 - in_flight - 2 * 5, 30 - in_flight
        backlog = None
        for _ in range(100):
            backlog = await connector.backlog()
            if backlog is not None and low <= backlog <= high:
                break
            await asyncio.sleep(0.02)
        assert backlog is not None and low <= backlog <= high
        release.set()
        await until(lambda: connector.status().delivered == 30, what="all 30")
        assert await connector.backlog() == 0


async def test_consumers_scale_up_with_a_backlog_and_back_down_when_it_is_gone(harness: Harness, target, group):
    spec = harness.spec(target, group, tuning=FAST, batch_size=2, max_consumers=4)
    rec = Recorder(lambda batch: asyncio.sleep(0.05))
    connector = harness.connector(spec)
    async with running(connector, rec):
        assert connector.status().consumers <= 1
        await harness.publish(target, bodies(60))
        await until(lambda: connector.status().consumers == 4, what="4 consumers")
        await until(lambda: connector.status().delivered == 60, what="all 60")
        await until(lambda: connector.status().consumers == 1, what="back to 1 consumer")
    assert rec.max_active >= 2
    assert sorted(rec.bodies()) == sorted(bodies(60))


async def test_messages_published_while_mist_is_down_arrive_when_it_starts_again(harness: Harness, target, group):
    spec = harness.spec(target, group, tuning=FAST, max_consumers=1)
    async with running(harness.connector(spec), Recorder()):
        pass  # the trigger has run once: its group / durable consumer / session exists
    await harness.publish(target, bodies(5))
    rec = Recorder()
    async with running(harness.connector(spec), rec):
        await until(lambda: len(rec.bodies()) >= 5, what="the 5 published while down")
    assert rec.bodies() == bodies(5)


async def test_a_message_whose_dead_letter_fails_is_not_acknowledged_and_comes_again(harness: Harness, target,
                                                                                     group):
    spec = harness.spec(target, group, tuning=FAST, batch_size=1, max_attempts=1, max_consumers=1)

    def always_fail(batch):
        raise RuntimeError("function failed")

    rec = Recorder(always_fail)
    dead_letter_calls = 0
    record = rec.dead_letter

    async def flaky_dead_letter(message, error):
        nonlocal dead_letter_calls
        dead_letter_calls += 1
        if dead_letter_calls == 1:
            raise ConnectionError("the dead-letter queue is unavailable")
        await record(message, error)

    rec.dead_letter = flaky_dead_letter  # type: ignore[method-assign]
    connector = harness.connector(spec)
    async with running(connector, rec):
        await harness.publish(target, [b"poison"])
        await until(lambda: len(rec.dead) == 1, what="the dead letter on the second try")
    assert len(rec.deliveries(b"poison")) == 2 and rec.dead[0][0].delivery_count == 2
    assert "dead-letter failed" in (connector.status().last_error or "")
