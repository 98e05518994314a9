"""Messages/s from each broker through its connector into a Deliver callback (no mist server).

For each broker (Redis Streams, NATS JetStream, RabbitMQ, MQTT) on 127.0.0.1:
- raw: N messages published with the broker's client library (the same one the connector uses),
  then consumed with it in the idiomatic at-least-once way (Redis XREADGROUP COUNT 100 + XACK,
  JetStream pull fetch 100 + ack, AMQP manual ack with prefetch 200, MQTT QoS 1): msgs/s each;
- connector: N messages published while the trigger is stopped, then `Connector.run()` timed from
  its being connected until the Deliver callback has seen them all acknowledged, with batch sizes 1 and 100, into a
  no-op Deliver and into one that sleeps 1 ms per batch (a fast function), default
  max_consumers (4) so consumers scale with the backlog.

MQTT runs with at most 1000 messages: mosquitto's default max_queued_messages drops the rest of
a session's backlog (docs/triggers.md).

    .venv/bin/python bench/triggers.py                  # ~1 min
    .venv/bin/python bench/triggers.py -n 50000 --brokers redis nats
"""

from __future__ import annotations

import asyncio
import json
import logging
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable

import aio_pika
import aiomqtt
import nats
import redis.asyncio as aioredis
from nats.js.api import AckPolicy, ConsumerConfig

from _common import Report, arg_parser
from mist.triggers.connectors import ConnectorSpec, ConnectorState, connector_for

HOST = "127.0.0.1"
MQTT_LIMIT = 1000  # mosquitto's default max_queued_messages per session
URLS = {"redis": f"redis://{HOST}:6379/0", "nats": f"nats://{HOST}:4222",
        "rabbitmq": f"amqp://guest:guest@{HOST}:5672/", "mqtt": f"mqtt://{HOST}:1883"}
OPTION = {"redis": "stream", "nats": "subject", "rabbitmq": "queue", "mqtt": "topic"}


def body(i: int) -> bytes:
    return json.dumps({"i": i, "pad": "x" * 64}).encode()


# --- per broker: publish, raw consume, cleanup (the same client libraries as the connectors) ---


class Broker:
    name = ""

    def target(self) -> str:
        return f"bench-{uuid.uuid4().hex[:10]}"

    async def publish(self, target: str, n: int) -> None: ...
    async def raw_consume(self, target: str, n: int) -> float: ...  # seconds to consume n (after setup)
    async def prepare_raw(self, target: str) -> None: ...
    async def cleanup(self, target: str, group: str) -> None: ...


class Redis(Broker):
    name = "redis"

    async def prepare_raw(self, target):
        client = aioredis.Redis(host=HOST)
        await client.xgroup_create(target, "raw", id="$", mkstream=True)
        await client.aclose()

    async def publish(self, target, n):
        client = aioredis.Redis(host=HOST)
        for start in range(0, n, 1000):
            async with client.pipeline(transaction=False) as pipe:
                for i in range(start, min(n, start + 1000)):
                    pipe.xadd(target, {"body": body(i)})
                await pipe.execute()
        await client.aclose()

    async def raw_consume(self, target, n):
        client = aioredis.Redis(host=HOST)
        got, t0 = 0, time.perf_counter()
        while got < n:
            reply = await client.xreadgroup("raw", "c", {target: ">"}, count=100, block=1000)
            ids = [eid for eid, _ in reply[0][1]] if reply else []
            if ids:
                await client.xack(target, "raw", *ids)
            got += len(ids)
        elapsed = time.perf_counter() - t0
        await client.aclose()
        return elapsed

    async def cleanup(self, target, group):
        client = aioredis.Redis(host=HOST)
        await client.delete(target)
        await client.aclose()


class Nats(Broker):
    name = "nats"

    def target(self) -> str:
        return f"bench.{uuid.uuid4().hex[:10]}"

    def stream(self, target: str) -> str:
        return "BENCH_" + target.split(".")[1]

    async def _js(self):
        nc = await nats.connect(f"nats://{HOST}:4222")
        return nc, nc.jetstream()

    async def prepare_raw(self, target):
        nc, js = await self._js()
        await js.add_stream(name=self.stream(target), subjects=[target])
        await js.add_consumer(self.stream(target), ConsumerConfig(durable_name="raw", ack_policy=AckPolicy.EXPLICIT))
        await nc.close()

    async def publish(self, target, n):
        nc, js = await self._js()
        for start in range(0, n, 500):  # 500 publishes in flight, each confirmed by the stream
            await asyncio.gather(*(js.publish(target, body(i)) for i in range(start, min(n, start + 500))))
        await nc.close()

    async def raw_consume(self, target, n):
        nc, js = await self._js()
        sub = await js.pull_subscribe_bind(durable="raw", stream=self.stream(target))
        got, t0 = 0, time.perf_counter()
        while got < n:
            try:
                msgs = await sub.fetch(100, timeout=1.0)
            except nats.errors.TimeoutError:
                continue
            for m in msgs:
                await m.ack()
            await nc.flush()
            got += len(msgs)
        elapsed = time.perf_counter() - t0
        await nc.close()
        return elapsed

    async def cleanup(self, target, group):
        nc, js = await self._js()
        try:
            await js.delete_stream(self.stream(target))
        except nats.js.errors.NotFoundError:
            await js.delete_stream("MIST_" + target.replace(".", "_"))
        await nc.close()


class Rabbit(Broker):
    name = "rabbitmq"

    async def prepare_raw(self, target):
        connection = await aio_pika.connect(URLS["rabbitmq"])
        async with connection:
            await (await connection.channel()).declare_queue(target, durable=True)

    async def publish(self, target, n):
        connection = await aio_pika.connect(URLS["rabbitmq"])
        async with connection:
            channel = await connection.channel()  # publisher confirms
            for start in range(0, n, 500):
                await asyncio.gather(*(channel.default_exchange.publish(
                    aio_pika.Message(body(i), delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=target)
                    for i in range(start, min(n, start + 500))))

    async def raw_consume(self, target, n):
        connection = await aio_pika.connect(URLS["rabbitmq"])
        async with connection:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=200)
            queue = await channel.declare_queue(target, passive=True)
            done, got = asyncio.Event(), 0

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                nonlocal got
                await message.ack()
                got += 1
                if got >= n:
                    done.set()

            t0 = time.perf_counter()
            await queue.consume(on_message)
            await done.wait()
            return time.perf_counter() - t0

    async def cleanup(self, target, group):
        connection = await aio_pika.connect(URLS["rabbitmq"])
        async with connection:
            channel = await connection.channel()
            for name in (target, f"{target}.mist-retry"):
                await channel.queue_delete(name)


class Mqtt(Broker):
    name = "mqtt"

    def target(self) -> str:
        return f"bench/{uuid.uuid4().hex[:10]}"

    def _client(self, identifier: str | None = None, clean: bool = True) -> aiomqtt.Client:
        client = aiomqtt.Client(HOST, 1883, identifier=identifier, protocol=aiomqtt.ProtocolVersion.V311,
                                clean_session=clean)
        client.pending_calls_threshold = 1000  # 100 publishes in flight are intended
        return client

    async def prepare_raw(self, target):
        async with self._client("bench-raw", clean=False) as c:  # a persistent session, subscribed
            await c.subscribe(target, qos=1)

    async def publish(self, target, n):
        async with self._client() as c:
            for start in range(0, n, 100):
                await asyncio.gather(*(c.publish(target, body(i), qos=1) for i in range(start, min(n, start + 100))))

    async def raw_consume(self, target, n):
        async with self._client("bench-raw", clean=False) as c:
            got, t0 = 0, time.perf_counter()
            async for _ in c.messages:  # QoS 1, acknowledged by paho after each message
                got += 1
                if got >= n:
                    break
            elapsed = time.perf_counter() - t0
        async with self._client("bench-raw", clean=True):
            pass
        return elapsed

    async def cleanup(self, target, group):
        async with self._client(group, clean=True):
            pass


BROKERS: dict[str, Callable[[], Broker]] = {"redis": Redis, "nats": Nats, "rabbitmq": Rabbit, "mqtt": Mqtt}


# --- the connector -------------------------------------------------------------------------


async def connector_rate(broker: Broker, n: int, batch_size: int, sleep_s: float) -> tuple[float, int]:
    """msgs/s through the connector for n pre-published messages, and the most consumers seen."""
    target, group = broker.target(), f"bench-{uuid.uuid4().hex[:10]}"
    if isinstance(broker, Nats):
        await broker.prepare_raw(target)  # the stream (the raw consumer on it is unused here)
    spec = ConnectorSpec.from_options(URLS[broker.name], **{OPTION[broker.name]: target}, batch_size=batch_size,
                                      group=group)
    delivered, done, most = 0, asyncio.Event(), 0

    async def deliver(batch):
        nonlocal delivered
        if sleep_s:
            await asyncio.sleep(sleep_s)
        delivered += len(batch)
        if delivered >= n:
            done.set()
        return set()

    async def dead_letter(message, error):
        raise AssertionError(f"nothing should fail: {error}")

    async def run_until(condition: Callable[[], Awaitable[None]], connector) -> float:
        """Seconds from the connector's being connected (its status' `since`, wall clock) until
        `condition` returns: connecting is left out, as the raw consumers connect before timing."""
        task = asyncio.create_task(connector.run(deliver, dead_letter))
        try:
            await condition()
            status = connector.status()
            assert status.state == ConnectorState.CONNECTED, status
            return time.time() - status.since
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    try:
        first = connector_for(spec)  # once, so the group / durable consumer / session exists

        async def connected() -> None:
            while first.status().state != ConnectorState.CONNECTED:
                await asyncio.sleep(0.01)

        await run_until(connected, first)
        await broker.publish(target, n)
        connector = connector_for(spec)

        async def all_delivered() -> None:
            nonlocal most
            while not done.is_set():
                most = max(most, connector.status().consumers)
                await asyncio.sleep(0.01)

        elapsed = await run_until(all_delivered, connector)
        return n / elapsed, most
    finally:
        await broker.cleanup(target, group)


async def raw_rates(broker: Broker, n: int) -> tuple[float, float]:
    target = broker.target()
    await broker.prepare_raw(target)
    try:
        t0 = time.perf_counter()
        await broker.publish(target, n)
        publish = n / (time.perf_counter() - t0)
        consume = n / await broker.raw_consume(target, n)
        return publish, consume
    finally:
        await broker.cleanup(target, "bench-raw")


async def main() -> None:
    p = arg_parser("messages/s through each trigger connector, next to the broker's raw rate")
    p.add_argument("-n", type=int, default=20_000, help="messages per run (MQTT: at most 1000)")
    p.add_argument("--n-sleep", type=int, default=5_000, help="messages per run with the 1 ms Deliver")
    p.add_argument("--brokers", nargs="+", default=list(BROKERS), choices=list(BROKERS))
    p.add_argument("--repeat", type=int, default=3, help="runs per figure; the median is shown")
    args = p.parse_args()
    logging.getLogger("aiormq").setLevel(logging.ERROR)  # a trigger stopped while opening a channel says so
    report = Report("triggers: connector throughput")
    for name in args.brokers:
        broker = BROKERS[name]()
        n = min(args.n, MQTT_LIMIT) if name == "mqtt" else args.n
        n_sleep = min(args.n_sleep, MQTT_LIMIT) if name == "mqtt" else args.n_sleep
        raws = [await raw_rates(broker, n) for _ in range(args.repeat)]
        publish, consume = statistics.median(r[0] for r in raws), statistics.median(r[1] for r in raws)
        report.row(f"{name} raw publish (N={n})", f"{publish:9.0f} msgs/s", "the client library, confirmed")
        report.row(f"{name} raw consume (N={n})", f"{consume:9.0f} msgs/s", "the client library, acked")
        report.data[name] = {"raw_publish": publish, "raw_consume": consume}
        for label, count, sleep_s in (("no-op", n, 0.0), ("1 ms", n_sleep, 0.001)):
            for batch_size in (1, 100):
                runs = [await connector_rate(broker, count, batch_size, sleep_s) for _ in range(args.repeat)]
                rate = statistics.median(r[0] for r in runs)
                consumers = max(r[1] for r in runs)
                report.row(f"{name} connector, batch {batch_size:>3}, {label} deliver (N={count})",
                           f"{rate:9.0f} msgs/s",
                           f"{rate / consume:5.2f} x raw consume, up to {consumers} consumers")
                report.data[name][f"{label} b{batch_size}"] = {"rate": rate, "consumers": consumers, "n": count}
    report.notes.append("connector: from connected until every message is acknowledged; default spec "
                        "(max_consumers 4, window 0); medians of --repeat runs")
    report.notes.append("raw consume reads 100 messages per call; a batch of 1 costs the connector a read and "
                        "an ack per message")
    report.print(args.json)


if __name__ == "__main__":
    asyncio.run(main())
