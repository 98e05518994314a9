"""Redis Streams through a consumer group (`redis://host:6379/0 --stream NAME`).

- The group (spec.group) is created at the stream's end ("$", MKSTREAM) on first start: a new
  trigger sees messages added from then on; an existing group continues where it stopped.
- Consumer i of this process is named "<spec.instance>-<i>"; the instance is distinct per process
  of a cluster (`mist up --db`), so the processes compete in the one group and each message is
  read by one of them. XREADGROUP puts what it reads in that consumer's pending list (PEL); XACK
  after the function succeeded removes it.
- Delivery counts are Redis's own (XPENDING times_delivered): XREADGROUP ">" delivers once;
  reading a PEL again, XCLAIM and XAUTOCLAIM each count one more delivery.
- A failed message stays pending and is XCLAIMed back when its retry delay is over.
- Restart: each consumer first re-reads its own PEL (id "0"), so what a crash left unacknowledged
  comes again at once (only this process's consumers: another live process's PEL is never read).
  Entries of consumers that are gone (a process of the cluster killed and not back, a
  scaled-down index) are taken over with XAUTOCLAIM once idle for visibility_timeout_s (`mist
  up --event-lease`); a consumer working on a batch, or holding a retry until it is due, keeps
  its entries fresh (XCLAIM JUSTID), so live work is not taken over.
- Body: the entry's "body" field; the other fields are the message's headers. An entry without
  a "body" field is delivered as a JSON object of all its fields.
- Backlog: XINFO GROUPS "lag" (entries not yet read by the group; Redis >= 7).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from mist.triggers.connectors._engine import BrokerConnector
from mist.triggers.connectors.base import Message

Entry = tuple[bytes, dict[bytes, bytes]]


def _text(value: bytes) -> str:
    return value.decode("utf-8", errors="replace")


class _RedisSession:
    def __init__(self, connector: RedisStreamsConnector, client: aioredis.Redis) -> None:
        self.connector, self.client = connector, connector_spec = connector, connector.spec
        self.client = client
        self.spec = connector_spec
        self.stream = connector_spec.target
        self.due: dict[bytes, float] = {}  # entry id -> monotonic time its retry is due
        self.next_autoclaim = 0.0

    async def consumer(self, index: int) -> _RedisConsumer:
        return _RedisConsumer(self, f"{self.spec.instance}-{index}")

    async def backlog(self) -> int | None:
        for group in await self.client.xinfo_groups(self.stream):
            if group.get("name") == self.spec.group.encode():
                lag = group.get("lag")
                return int(lag) if lag is not None else None
        return None

    async def close(self) -> None:
        await self.client.aclose()

    def take_due(self, now: float, max_n: int) -> list[bytes]:
        ids = sorted((i for i, t in self.due.items() if t <= now), key=lambda i: self.due[i])[:max_n]
        for i in ids:
            del self.due[i]
        return ids


class _RedisConsumer:
    def __init__(self, session: _RedisSession, name: str) -> None:
        self.s, self.name = session, name
        self.client, self.stream, self.group = session.client, session.stream, session.spec.group
        self.history: bytes | None = b"0"  # own PEL first, then new entries

    async def fetch(self, max_n: int, timeout_s: float) -> list[Message]:
        s, now = self.s, self.s.connector._monotonic()
        if self.history is not None:
            entries = await self._read(self.history, max_n, None)
            if entries:
                self.history = entries[-1][0]
                # a retry waiting out its delay stays in this PEL: it comes when due, not now
                return await self._messages([e for e in entries if e[0] not in s.due], counted=True)
            self.history = None
        if ids := s.take_due(now, max_n):
            entries = await self.client.xclaim(self.stream, self.group, self.name, 0, ids)
            if entries:
                return await self._messages(entries, counted=True)
        visibility = s.spec.tuning.visibility_timeout_s
        if now >= s.next_autoclaim:
            s.next_autoclaim = now + visibility / 2
            if s.due:  # waiting out a retry delay is not being abandoned
                await self.client.xclaim(self.stream, self.group, self.name, 0, list(s.due), justid=True)
            _, entries, _deleted = await self.client.xautoclaim(
                self.stream, self.group, self.name, int(visibility * 1000), "0-0", count=max_n)
            if entries:
                return await self._messages(entries, counted=True)
        if s.due:
            timeout_s = min(timeout_s, max(0.001, min(s.due.values()) - now))
        entries = await self._read(b">", max_n, max(1, int(timeout_s * 1000)))
        return await self._messages(entries, counted=False)

    async def _read(self, from_id: bytes, max_n: int, block_ms: int | None) -> list[Entry]:
        reply = await self.client.xreadgroup(self.group, self.name, {self.stream: from_id}, count=max_n,
                                             block=block_ms)
        return list(reply[0][1]) if reply else []

    async def _messages(self, entries: Sequence[Entry], *, counted: bool) -> list[Message]:
        gone = [eid for eid, fields in entries if not fields]  # deleted from the stream (XDEL, trimming)
        if gone:
            await self.client.xack(self.stream, self.group, *gone)
        entries = [(eid, fields) for eid, fields in entries if fields]
        counts = [1] * len(entries)
        if counted and entries:
            pipe = self.client.pipeline(transaction=False)
            for eid, _ in entries:
                pipe.xpending_range(self.stream, self.group, eid, eid, 1, self.name)
            counts = [rows[0]["times_delivered"] if rows else 1 for rows in await pipe.execute()]
        now = self.s.connector._clock()
        return [self._message(eid, fields, n, now) for (eid, fields), n in zip(entries, counts)]

    def _message(self, eid: bytes, fields: dict[bytes, bytes], count: int, now: float) -> Message:
        fields = dict(fields)
        body = fields.pop(b"body", None)
        headers: dict[str, str] = {}
        if body is None:
            body = json.dumps({_text(k): _text(v) for k, v in fields.items()}).encode()
        else:
            headers = {_text(k): _text(v) for k, v in fields.items()}
        entry_id = eid.decode()
        attributes = {"stream": self.stream, "SentTimestamp": entry_id.split("-", 1)[0]}
        return Message(entry_id, body, attributes, self.s.connector.source, count, now, headers, handle=eid)

    async def ack(self, messages: Sequence[Message]) -> None:
        await self.client.xack(self.stream, self.group, *[m.handle for m in messages])

    async def retry(self, message: Message, delay_s: float) -> None:
        self.s.due[message.handle] = self.s.connector._monotonic() + delay_s  # stays in our PEL meanwhile

    async def touch(self, messages: Sequence[Message]) -> None:
        await self.client.xclaim(self.stream, self.group, self.name, 0, [m.handle for m in messages],
                                 justid=True)

    async def close(self) -> None:
        return None  # what is pending stays in this consumer's PEL: read again at the next start


class RedisStreamsConnector(BrokerConnector):
    async def _connect(self) -> _RedisSession:
        spec = self.spec
        client: Any = aioredis.from_url(
            spec.url, client_name=f"mist-trigger-{spec.group}", retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=spec.tuning.connect_timeout_s, socket_keepalive=True)
        try:
            try:
                await client.xgroup_create(spec.target, spec.group, id="$", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            return _RedisSession(self, client)
        except BaseException:
            await client.aclose()
            raise
