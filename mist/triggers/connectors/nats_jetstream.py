"""NATS JetStream through a durable pull consumer (`nats://host:4222 --subject SUBJECT`).

- The stream that captures the subject is looked up; if there is none, a file-backed stream
  "MIST_<subject>" is created for it. The durable consumer (spec.group) is created on first start
  with DeliverPolicy NEW (a new trigger sees messages published from then on), explicit acks,
  AckWait = visibility_timeout_s and no server-side delivery limit: mist counts attempts.
- Delivery counts are the server's (num_delivered). A failed message is NAKed with the retry
  delay; on its last attempt it is dead-lettered, then ACKed. Acks are flushed per batch.
- Pull requests are mist's own (no_wait for what is there, else one lingering request for one
  message), each read until the server ends it, so no message is left unseen in the client.
- While the function runs, the batch is kept alive with in-progress acks ("+WPI"); a consumer
  that is cancelled NAKs what it had fetched so it comes again at once; after a crash the
  server redelivers after AckWait.
- The processes of a cluster (`mist up --db`) pull from the one durable: JetStream hands each
  message to one pull request, so to one process; a killed process's messages come to the
  others after AckWait (`mist up --event-lease`, for a consumer created with it).
- The message id is the stream sequence number. Backlog: the consumer's num_pending.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from mist.triggers.connectors._engine import BrokerConnector, describe
from mist.triggers.connectors.base import Message


class _NatsSession:
    def __init__(self, connector: NatsJetStreamConnector, nc: Any, stream: str) -> None:
        self.connector, self.spec, self.nc, self.stream = connector, connector.spec, nc, stream
        self.js = nc.jetstream()
        self.next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{self.spec.group}"

    async def consumer(self, index: int) -> _NatsConsumer:
        inbox = self.nc.new_inbox()
        return _NatsConsumer(self, inbox, await self.nc.subscribe(inbox))

    async def backlog(self) -> int | None:
        return (await self.js.consumer_info(self.stream, self.spec.group)).num_pending

    async def close(self) -> None:
        await self.nc.close()


class _NatsConsumer:
    """Pull requests of its own, each read to its end (the batch, or the server's 404/408 status).

    nats-py's fetch() gives up on a request at its client-side timeout while the server may
    still deliver to it; such a message waits unseen in the subscription, its AckWait running,
    and comes twice. Here no request is left open: nothing is delivered that is not read.
    """

    def __init__(self, session: _NatsSession, inbox: str, sub: Any) -> None:
        self.s, self.inbox, self.sub = session, inbox, sub
        self.in_flight: dict[int, Any] = {}  # id(msg) -> msg: fetched, not settled

    async def fetch(self, max_n: int, timeout_s: float) -> list[Message]:
        msgs = await self._pull(max_n, None)  # what is there now
        if not msgs:  # wait for one, then take what came with it
            msgs = await self._pull(1, max(0.01, timeout_s))
            if msgs and max_n > 1:
                msgs += await self._pull(max_n - 1, None)
        now = self.s.connector._clock()
        out = []
        for msg in msgs:
            self.in_flight[id(msg)] = msg
            md = msg.metadata
            attributes = {"subject": msg.subject, "stream": md.stream, "sequence": str(md.sequence.stream),
                          "SentTimestamp": str(int(md.timestamp.timestamp() * 1000))}
            out.append(Message(str(md.sequence.stream), msg.data, attributes, self.s.connector.source,
                               md.num_delivered, now, dict(msg.headers or {}), handle=msg))
        return out

    async def _pull(self, batch: int, expires_s: float | None) -> list[Any]:
        request: dict[str, Any] = {"batch": batch}
        if expires_s is None:
            request["no_wait"] = True
        else:
            request["expires"] = int(expires_s * 1e9)
        await self.s.nc.publish(self.s.next_subject, json.dumps(request).encode(), reply=self.inbox)
        limit = (expires_s or 0) + self.s.spec.tuning.connect_timeout_s  # the server always ends it before
        msgs: list[Any] = []
        while len(msgs) < batch:
            try:
                msg = await self.sub.next_msg(timeout=limit)
            except nats.errors.TimeoutError:
                raise ConnectionError("NATS did not answer a pull request in time") from None
            status = (msg.headers or {}).get("Status") if not msg.data else None
            if status in ("404", "408"):  # no messages / the request expired: it is over
                break
            if status == "100":  # idle heartbeat
                continue
            if status:
                description = (msg.headers or {}).get("Description", "")
                raise ConnectionError(f"NATS ended a pull request: {status} {description}")
            msgs.append(msg)
        return msgs

    async def ack(self, messages: Sequence[Message]) -> None:
        for m in messages:
            self.in_flight.pop(id(m.handle), None)
            await m.handle.ack()
        await self.s.nc.flush()

    async def retry(self, message: Message, delay_s: float) -> None:
        self.in_flight.pop(id(message.handle), None)
        await message.handle.nak(delay=delay_s)

    async def touch(self, messages: Sequence[Message]) -> None:
        for m in messages:
            await m.handle.in_progress()

    async def close(self) -> None:
        msgs, self.in_flight = list(self.in_flight.values()), {}
        for msg in msgs:  # cancelled mid-batch: hand them back now rather than after AckWait
            await msg.nak()
        await self.s.nc.flush()
        await self.sub.unsubscribe()


class NatsJetStreamConnector(BrokerConnector):
    async def _connect(self) -> _NatsSession:
        spec = self.spec

        errors: list[Exception] = []

        async def note(exc: Exception) -> None:  # errors surface through the calls that fail
            errors.append(exc)

        try:  # nats-py retries a first connect forever unless a server is out of attempts
            nc = await nats.connect(servers=[spec.url], allow_reconnect=False, max_reconnect_attempts=1,
                                    reconnect_time_wait=0, name=f"mist-trigger-{spec.group}",
                                    connect_timeout=spec.tuning.connect_timeout_s, error_cb=note)
        except nats.errors.NoServersError:
            raise ConnectionError(f"cannot reach NATS: {describe(errors[-1]) if errors else 'no server'}") from None
        try:
            js = nc.jetstream()
            try:
                stream = await js.find_stream_name_by_subject(spec.target)
            except nats.js.errors.NotFoundError:
                stream = "MIST_" + re.sub(r"[^A-Za-z0-9_-]", "_", spec.target)
                await js.add_stream(name=stream, subjects=[spec.target])
            try:
                await js.consumer_info(stream, spec.group)
            except nats.js.errors.NotFoundError:
                await js.add_consumer(stream, ConsumerConfig(
                    durable_name=spec.group, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.NEW,
                    filter_subject=spec.target, ack_wait=spec.tuning.visibility_timeout_s, max_deliver=-1,
                    max_ack_pending=max(1000, 4 * spec.batch_size * spec.max_consumers)))
            return _NatsSession(self, nc, stream)
        except BaseException:
            await nc.close()
            raise
