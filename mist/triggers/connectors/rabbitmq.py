"""RabbitMQ through an AMQP 0-9-1 queue (`amqp://user:pass@host:5672/vhost --queue NAME`).

- The queue is used as it is if it exists (classic, quorum, any arguments); if not, a durable
  classic queue is declared. Beside it mist declares "<queue>.mist-retry", a durable queue whose
  dead-letter route leads back to the queue: the retry delay lives at the broker.
- Each consumer is a channel with manual acks and a prefetch of 2 x batch_size.
- Retries: a failed message is re-published (persistent, publisher-confirmed) to the retry
  queue with the header "x-mist-attempt" = its next delivery count and an expiration = the
  delay; only then is the original acknowledged. On expiry RabbitMQ moves it back to the end of
  the queue. (Per-message TTLs expire at the head of the retry queue, so a short delay can wait
  behind a longer one: delays are lower bounds.) A crash between the publish and the ack gives
  a duplicate, never a loss.
- Delivery count: x-mist-attempt (1 when absent), plus quorum queues' x-delivery-count, or plus
  one when RabbitMQ flags the message "redelivered" (a consumer died holding it).
- Cancelled or disconnected consumers' unacknowledged messages are requeued by RabbitMQ.
- The processes of a cluster (`mist up --db`) are competing consumers on the one queue: each
  message goes to one channel; a killed process's connection drops and its unacknowledged
  messages are requeued at once (flagged redelivered) for the others.
- The message id is the AMQP message_id property; without one mist makes one and keeps it on
  retries. Backlog: the queue's ready-message count.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

import aio_pika
import aio_pika.exceptions
from aio_pika.abc import AbstractIncomingMessage

from mist.triggers.connectors._engine import BrokerConnector, LocalQueue
from mist.triggers.connectors.base import Message

ATTEMPT_HEADER = "x-mist-attempt"
_BROKER_HEADERS = {ATTEMPT_HEADER, "x-delivery-count", "x-death", "x-first-death-exchange",
                   "x-first-death-queue", "x-first-death-reason", "x-last-death-exchange",
                   "x-last-death-queue", "x-last-death-reason"}


def retry_queue_name(queue: str) -> str:
    return f"{queue}.mist-retry"


def _header_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


class _RabbitSession:
    def __init__(self, connector: RabbitMQConnector, connection: Any, channel: Any) -> None:
        self.connector, self.spec, self.connection, self.channel = connector, connector.spec, connection, channel

    async def consumer(self, index: int) -> _RabbitConsumer:
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=min(65535, 2 * self.spec.batch_size))
        queue = await channel.declare_queue(self.spec.target, passive=True)
        consumer = _RabbitConsumer(self, channel, queue)
        consumer.tag = await queue.consume(consumer.received, no_ack=False)
        return consumer

    async def backlog(self) -> int | None:
        queue = await self.channel.declare_queue(self.spec.target, passive=True)
        return queue.declaration_result.message_count

    async def close(self) -> None:
        await self.connection.close()

    async def publish_retry(self, message: Message, delay_s: float) -> None:
        incoming: AbstractIncomingMessage = message.handle
        headers = {k: v for k, v in (incoming.headers or {}).items() if k not in _BROKER_HEADERS}
        headers[ATTEMPT_HEADER] = message.delivery_count + 1
        copy = aio_pika.Message(
            incoming.body, headers=headers, content_type=incoming.content_type,
            content_encoding=incoming.content_encoding, correlation_id=incoming.correlation_id,
            message_id=incoming.message_id, timestamp=incoming.timestamp, type=incoming.type,
            app_id=incoming.app_id, reply_to=incoming.reply_to, priority=incoming.priority,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT, expiration=max(0.001, delay_s))
        await self.channel.default_exchange.publish(copy, routing_key=retry_queue_name(self.spec.target))


class _RabbitConsumer:
    def __init__(self, session: _RabbitSession, channel: Any, queue: Any) -> None:
        self.s, self.channel, self.queue = session, channel, queue
        self.local: LocalQueue[AbstractIncomingMessage] = LocalQueue()
        self.tag: str | None = None
        self.open_tags: set[int] = set()  # delivered to this channel, not yet acknowledged

    async def received(self, incoming: AbstractIncomingMessage) -> None:
        self.open_tags.add(incoming.delivery_tag)
        self.local.put(incoming)

    async def fetch(self, max_n: int, timeout_s: float) -> list[Message]:
        got = await self.local.take(max_n, timeout_s)
        if not got and (self.channel.is_closed or self.s.connection.is_closed):
            raise ConnectionError("RabbitMQ channel closed")
        now = self.s.connector._clock()
        return [self._message(incoming, now) for incoming in got]

    def _message(self, incoming: AbstractIncomingMessage, now: float) -> Message:
        raw = dict(incoming.headers or {})
        count = int(raw.get(ATTEMPT_HEADER, 1))  # type: ignore[call-overload]
        if "x-delivery-count" in raw:  # quorum queues count redeliveries themselves
            count += int(raw["x-delivery-count"])  # type: ignore[call-overload]
        elif incoming.redelivered:
            count += 1
        attributes = {"queue": self.s.spec.target, "routingKey": incoming.routing_key or "",
                      "exchange": incoming.exchange or "", "redelivered": str(bool(incoming.redelivered)).lower()}
        for key, value in (("contentType", incoming.content_type), ("correlationId", incoming.correlation_id),
                           ("type", incoming.type), ("appId", incoming.app_id), ("replyTo", incoming.reply_to)):
            if value:
                attributes[key] = value
        if incoming.timestamp is not None:
            attributes["SentTimestamp"] = str(int(incoming.timestamp.timestamp() * 1000))
        headers = {k: _header_text(v) for k, v in raw.items() if k not in _BROKER_HEADERS}
        if not incoming.message_id:  # made once, and carried by a retry's copy
            incoming.message_id = uuid.uuid4().hex
        return Message(incoming.message_id, incoming.body, attributes, self.s.connector.source, count, now, headers,
                       handle=incoming)

    async def ack(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        tags = {m.handle.delivery_tag for m in messages}
        top = max(tags)
        if all(t in tags for t in self.open_tags if t <= top):  # one frame: "all up to the last"
            await next(m for m in messages if m.handle.delivery_tag == top).handle.ack(multiple=True)
            self.open_tags = {t for t in self.open_tags if t > top}
            return
        for m in messages:
            await m.handle.ack()
            self.open_tags.discard(m.handle.delivery_tag)

    async def retry(self, message: Message, delay_s: float) -> None:
        await self.s.publish_retry(message, delay_s)  # confirmed by the broker before the ack
        await message.handle.ack()
        self.open_tags.discard(message.handle.delivery_tag)

    async def touch(self, messages: Sequence[Message]) -> None:
        return None  # RabbitMQ's consumer timeout (30 min by default) is past any function timeout

    async def close(self) -> None:
        with suppress(Exception):
            if self.tag is not None:
                await self.queue.cancel(self.tag)
        await self.channel.close()  # RabbitMQ requeues what this channel had not acknowledged


class RabbitMQConnector(BrokerConnector):
    async def _connect(self) -> _RabbitSession:
        spec = self.spec
        connection = await aio_pika.connect(spec.url, timeout=spec.tuning.connect_timeout_s,
                                            client_properties={"connection_name": f"mist-trigger-{spec.group}"})
        try:
            channel = await connection.channel()
            try:
                await channel.declare_queue(spec.target, passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:  # the failed declare closed the channel
                channel = await connection.channel()
                await channel.declare_queue(spec.target, durable=True)
            await channel.declare_queue(retry_queue_name(spec.target), durable=True, arguments={
                "x-dead-letter-exchange": "", "x-dead-letter-routing-key": spec.target})
            return _RabbitSession(self, connection, channel)
        except BaseException:
            await connection.close()
            raise
