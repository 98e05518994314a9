"""MQTT through a QoS 1 shared subscription in a persistent session (`mqtt://host:1883 --topic FILTER`).

- MQTT 5. Each process subscribes to `$share/<spec.group>/<topic>` as client id
  `<spec.group>.<spec.instance>`, clean start off and a session that never expires: the processes
  of a cluster (`mist up --db`) are the group's members and the broker hands each message to ONE
  of them (a lone mist is a group of one). Receive Maximum is raised (up to 65535) so a batch can
  gather more than the broker's default 20 unacknowledged messages. Retained messages are not
  delivered: MQTT 5 sends none on a shared subscription.
- Acks are manual (paho's manual_ack, reached through aiomqtt's client): PUBACK is sent only
  after the function succeeded, or after the dead letter. Until then the broker holds the message
  for this session and resends it after a reconnect.
- While a process is down its session lives on at the broker, which keeps its unacknowledged
  messages AND (mosquitto 2.0, measured) goes on routing its share of new messages to it: they
  wait, not lost, until a process with the same instance (the same host and data dir) connects
  again and receives them all. The others meanwhile take only their own share. A process
  removed for good leaves its session's messages at the broker: start mist once more on its data
  dir to drain them (see docs/cluster.md). Brokers that route shared messages only to connected
  members (MQTT 5 allows both) deliver the new ones to the others at once.
- MQTT cannot hand a message back, and has no message id or delivery count: mist keeps failed
  messages in the session's buffer and redelivers them itself after the delay, counting attempts
  in memory. After a restart the broker resends what was not acknowledged and the count starts
  again at 1. The message id is made by mist when the message arrives.
- Scaling: all consumers take batches from the one session's buffer; the backlog is what the
  broker has pushed and mist has not delivered yet (the broker does not say what it still holds).
- Operators: mosquitto drops QoS 1 messages for a session beyond `max_queued_messages` (1000 by
  default); raise it (0 = no limit) where nothing may be lost. See docs/triggers.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from mist.triggers.connectors._engine import BrokerConnector, LocalQueue
from mist.triggers.connectors.base import Message
from mist.triggers.connectors.spec import ConnectorSpec

NEVER_EXPIRES = 0xFFFFFFFF


def client_id(spec: ConnectorSpec) -> str:
    """This process's session: stable across its restarts, distinct from the cluster's others."""
    return f"{spec.group}.{spec.instance}"


def shared_filter(spec: ConnectorSpec) -> str:
    """The subscription all processes of a trigger share: each message goes to one of them."""
    return f"$share/{spec.group}/{spec.target}"


class _MqttSession:
    def __init__(self, connector: MqttConnector, client: aiomqtt.Client, stack: contextlib.AsyncExitStack) -> None:
        self.connector, self.spec, self.client, self.stack = connector, connector.spec, client, stack
        self.paho: Any = client._client  # aiomqtt 2.5 does not expose manual acks; paho does
        self.local: LocalQueue[Message] = LocalQueue()
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for incoming in self.client.messages:
            self.local.put(self._message(incoming))

    def _message(self, incoming: aiomqtt.Message) -> Message:
        payload = incoming.payload
        body = payload if isinstance(payload, bytes) else str(payload if payload is not None else "").encode()
        attributes = {"topic": incoming.topic.value, "qos": str(incoming.qos), "retain": str(incoming.retain).lower()}
        headers: dict[str, str] = {}
        props = incoming.properties
        if props is not None:
            if getattr(props, "ContentType", None):
                attributes["contentType"] = props.ContentType
            for name, value in getattr(props, "UserProperty", None) or []:
                headers[name] = value
        return Message(uuid.uuid4().hex, body, attributes, self.connector.source, 1, self.connector._clock(), headers,
                       handle=(self.paho, incoming.mid))

    def check(self) -> None:
        if self.reader.done():
            exc = None if self.reader.cancelled() else self.reader.exception()
            raise ConnectionError(f"MQTT connection lost: {exc}") from exc

    async def consumer(self, index: int) -> _MqttConsumer:
        return _MqttConsumer(self)

    async def backlog(self) -> int | None:
        self.check()
        return len(self.local)

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader
        await self.stack.aclose()  # unacknowledged messages stay in the broker's session


class _MqttConsumer:
    def __init__(self, session: _MqttSession) -> None:
        self.s = session

    async def fetch(self, max_n: int, timeout_s: float) -> list[Message]:
        got = await self.s.local.take(max_n, timeout_s)
        if not got:
            self.s.check()
        return got

    async def ack(self, messages: Sequence[Message]) -> None:
        for m in messages:
            paho, mid = m.handle
            if paho is self.s.paho:  # a message from an older connection is resent by the broker
                paho.ack(mid, 1)

    async def retry(self, message: Message, delay_s: float) -> None:
        self.s.local.put_later(replace(message, delivery_count=message.delivery_count + 1), delay_s)

    async def touch(self, messages: Sequence[Message]) -> None:
        return None  # the broker holds unacknowledged messages for the session, without a timeout

    async def close(self) -> None:
        return None


class MqttConnector(BrokerConnector):
    async def _connect(self) -> _MqttSession:
        spec = self.spec
        parts = urlsplit(spec.url)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = NEVER_EXPIRES
        props.ReceiveMaximum = min(65535, max(1000, 4 * spec.batch_size * spec.max_consumers))
        client = aiomqtt.Client(
            parts.hostname or "127.0.0.1", parts.port or (8883 if parts.scheme == "mqtts" else 1883),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            identifier=client_id(spec), protocol=aiomqtt.ProtocolVersion.V5, clean_start=False, properties=props,
            timeout=spec.tuning.connect_timeout_s,
            tls_context=ssl.create_default_context() if parts.scheme == "mqtts" else None)
        client._client.manual_ack_set(True)
        stack = contextlib.AsyncExitStack()
        await stack.enter_async_context(client)
        try:
            await client.subscribe(shared_filter(spec), options=SubscribeOptions(qos=1))
            return _MqttSession(self, client, stack)
        except BaseException:
            await stack.aclose()
            raise
