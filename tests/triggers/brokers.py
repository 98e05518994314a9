"""One harness per broker for the connector contract tests (and bench/triggers.py's publishing).

A harness makes a fresh target (stream / subject / queue / topic), publishes to it with the
broker's own client library, builds a connector, and cleans up. `Outage` puts a TCP proxy
between the connector and the broker so a test can refuse and drop its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from collections.abc import Sequence

import aio_pika
import aiomqtt
import nats
import redis.asyncio as aioredis

from mist.triggers.connectors import Connector, ConnectorSpec, Tuning, connector_for
from mist.triggers.connectors.memory import MemoryBroker, MemoryConnector
from mist.triggers.connectors.rabbitmq import retry_queue_name

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class TcpProxy:
    """127.0.0.1:port -> 127.0.0.1:upstream; stop() refuses new connections and drops live ones."""

    def __init__(self, upstream: int) -> None:
        self.upstream, self.port = upstream, free_port()
        self._server: asyncio.Server | None = None
        self._links: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, HOST, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for a, b in list(self._links):
            a.transport.abort()
            b.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream)
        except OSError:
            writer.transport.abort()
            return
        link = (writer, up_writer)
        self._links.add(link)
        pumps = [asyncio.create_task(self._pump(reader, up_writer)), asyncio.create_task(self._pump(up_reader, writer))]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            writer.transport.abort()
            up_writer.transport.abort()
            self._links.discard(link)
            self._tasks.difference_update(pumps)

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()


class Harness:
    kind = ""
    scheme = ""
    option = ""  # the ConnectorSpec.from_options keyword naming the target
    port = 0
    has_broker_delivery_count = True  # MQTT counts attempts in memory only

    def url(self, port: int | None = None) -> str:
        return f"{self.scheme}://{HOST}:{port or self.port}"

    def new_target(self) -> str:
        return f"mist-test-{uuid.uuid4().hex[:12]}"

    def spec(self, target: str, group: str, *, port: int | None = None, tuning: Tuning | None = None,
             **options: object) -> ConnectorSpec:
        options[self.option] = target
        return ConnectorSpec.from_options(self.url(port), group=group, tuning=tuning, **options)  # type: ignore[arg-type]

    def connector(self, spec: ConnectorSpec) -> Connector:
        return connector_for(spec)

    async def publish(self, target: str, bodies: Sequence[bytes], headers: dict[str, str] | None = None) -> None:
        raise NotImplementedError

    async def cleanup(self, target: str, group: str) -> None:
        raise NotImplementedError

    # outages: the connector's way to the broker, cut and restored
    async def outage_port(self) -> int:
        self._proxy = TcpProxy(self.port)
        return self._proxy.port

    async def cut(self) -> None:
        await self._proxy.stop()

    async def restore(self) -> None:
        await self._proxy.start()


class RedisHarness(Harness):
    kind, scheme, option, port = "redis", "redis", "stream", 6379

    async def publish(self, target, bodies, headers=None):
        client = aioredis.Redis(host=HOST, port=self.port)
        async with client.pipeline(transaction=False) as pipe:
            for body in bodies:
                pipe.xadd(target, {"body": body, **(headers or {})})
            await pipe.execute()
        await client.aclose()

    async def cleanup(self, target, group):
        client = aioredis.Redis(host=HOST, port=self.port)
        await client.delete(target)
        await client.aclose()


class NatsHarness(Harness):
    kind, scheme, option, port = "nats", "nats", "subject", 4222

    def new_target(self) -> str:
        return f"mist.test.{uuid.uuid4().hex[:12]}"

    def stream(self, target: str) -> str:
        return "T_" + target.rsplit(".", 1)[1]

    async def create(self, target: str) -> None:
        nc = await nats.connect(self.url())
        await nc.jetstream().add_stream(name=self.stream(target), subjects=[target])
        await nc.close()

    async def publish(self, target, bodies, headers=None):
        nc = await nats.connect(self.url())
        js = nc.jetstream()
        for body in bodies:
            await js.publish(target, body, headers=headers)
        await nc.close()

    async def cleanup(self, target, group):
        nc = await nats.connect(self.url())
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_stream(self.stream(target))
        await nc.close()


class RabbitHarness(Harness):
    kind, scheme, option, port = "amqp", "amqp", "queue", 5672

    def url(self, port: int | None = None) -> str:
        return f"amqp://guest:guest@{HOST}:{port or self.port}/"

    async def publish(self, target, bodies, headers=None):
        connection = await aio_pika.connect(self.url())
        async with connection:
            channel = await connection.channel()
            for body in bodies:
                await channel.default_exchange.publish(
                    aio_pika.Message(body, headers=headers, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                    routing_key=target)

    async def cleanup(self, target, group):
        connection = await aio_pika.connect(self.url())
        async with connection:
            channel = await connection.channel()
            for name in (target, retry_queue_name(target)):
                await channel.queue_delete(name)


class MqttHarness(Harness):
    kind, scheme, option, port = "mqtt", "mqtt", "topic", 1883
    has_broker_delivery_count = False

    def new_target(self) -> str:
        return f"mist/test/{uuid.uuid4().hex[:12]}"

    async def publish(self, target, bodies, headers=None):
        async with aiomqtt.Client(HOST, self.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
            for body in bodies:
                await client.publish(target, body, qos=1)

    async def cleanup(self, target, group, instances=(socket.gethostname(),)):
        # a clean start with no session expiry ends each instance's persistent session (and its queue)
        for instance in instances:
            async with aiomqtt.Client(HOST, self.port, identifier=f"{group}.{instance}",
                                      protocol=aiomqtt.ProtocolVersion.V5, clean_start=True):
                pass


class MemoryHarness(Harness):
    kind, scheme, option = "memory", "memory", "queue"
    has_broker_delivery_count = True

    def __init__(self) -> None:
        self.broker = MemoryBroker()

    def url(self, port: int | None = None) -> str:
        return "memory://local"

    def connector(self, spec):
        return MemoryConnector(spec, self.broker)

    async def publish(self, target, bodies, headers=None):
        for body in bodies:
            self.broker.publish(target, body, headers)

    async def cleanup(self, target, group):
        return None

    async def outage_port(self) -> int:
        self.broker.down = True
        return 0

    async def cut(self) -> None:
        self.broker.down = True

    async def restore(self) -> None:
        self.broker.down = False


HARNESSES = {"redis": RedisHarness, "nats": NatsHarness, "rabbitmq": RabbitHarness, "mqtt": MqttHarness,
             "memory": MemoryHarness}
