"""An in-memory broker and its connector: the shipped fake for tests of the trigger manager.

    broker = MemoryBroker()
    spec = ConnectorSpec.from_options("memory://local", queue="orders", batch_size=10)
    connector = MemoryConnector(spec, broker)
    broker.publish("orders", b'{"id": 1}', headers={"tenant": "acme"})

It keeps the at-least-once contract of a real broker (it passes the same contract tests):
a fetched message is in flight until acknowledged; a retried one comes back after its delay
with delivery_count + 1; when a session ends (the connector is cancelled, or
`drop_connections()`), its in-flight messages are ready again. `down = True` makes connecting
fail (ConnectionRefusedError) until it is set back, and drops live sessions.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass

from mist.triggers.connectors._engine import BrokerConnector, LocalQueue
from mist.triggers.connectors.base import Message
from mist.triggers.connectors.spec import ConnectorSpec


@dataclass(slots=True)
class _Entry:
    id: str
    body: bytes
    headers: dict[str, str]
    sent_at: float
    deliveries: int = 0


class MemoryBroker:
    def __init__(self) -> None:
        self._queues: dict[str, LocalQueue[_Entry]] = {}
        self._ids = itertools.count(1)
        self._sessions: set[_MemorySession] = set()
        self._down = False

    @property
    def down(self) -> bool:
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        self._down = value
        if value:
            self.drop_connections()

    def queue(self, name: str) -> LocalQueue[_Entry]:
        return self._queues.setdefault(name, LocalQueue())

    def publish(self, queue: str, body: bytes, headers: dict[str, str] | None = None) -> str:
        entry = _Entry(str(next(self._ids)), body, dict(headers or {}), time.time())
        self.queue(queue).put(entry)
        return entry.id

    def waiting(self, queue: str) -> int:
        """Messages not yet fetched (including those waiting out a retry delay)."""
        return len(self.queue(queue))

    def drop_connections(self) -> None:
        for session in list(self._sessions):
            session.drop()


class _MemorySession:
    def __init__(self, broker: MemoryBroker, spec: ConnectorSpec) -> None:
        self._broker, self._spec, self._source = broker, spec, spec.source
        self._queue = broker.queue(spec.target)
        self._in_flight: dict[int, _Entry] = {}
        self._dropped = False
        broker._sessions.add(self)

    def drop(self) -> None:
        self._dropped = True
        self._give_back()

    def _give_back(self) -> None:
        self._broker._sessions.discard(self)
        for entry in self._in_flight.values():
            self._queue.put(entry)
        self._in_flight.clear()

    def _check(self) -> None:
        if self._dropped:
            raise ConnectionResetError("memory broker: connection dropped")

    async def consumer(self, index: int) -> _MemoryConsumer:
        self._check()
        return _MemoryConsumer(self)

    async def backlog(self) -> int | None:
        self._check()
        return len(self._queue)

    async def close(self) -> None:
        self._give_back()

    async def fetch(self, max_n: int, timeout_s: float) -> list[Message]:
        self._check()
        entries = await self._queue.take(max_n, timeout_s)
        if self._dropped:  # dropped while waiting: leave them for the next session
            for entry in entries:
                self._queue.put(entry)
            self._check()
        now = time.time()
        out = []
        for entry in entries:
            entry.deliveries += 1
            self._in_flight[id(entry)] = entry
            out.append(Message(entry.id, entry.body, {"SentTimestamp": str(int(entry.sent_at * 1000))},
                               self._source, entry.deliveries, now, dict(entry.headers), handle=entry))
        return out

    def settle(self, messages: Sequence[Message]) -> list[_Entry]:
        self._check()
        return [e for m in messages if (e := self._in_flight.pop(id(m.handle), None)) is not None]


class _MemoryConsumer:
    def __init__(self, session: _MemorySession) -> None:
        self._session = session

    async def fetch(self, max_n: int, timeout_s: float) -> list[Message]:
        return await self._session.fetch(max_n, timeout_s)

    async def ack(self, messages: Sequence[Message]) -> None:
        self._session.settle(messages)

    async def retry(self, message: Message, delay_s: float) -> None:
        for entry in self._session.settle([message]):
            self._session._queue.put_later(entry, delay_s)

    async def touch(self, messages: Sequence[Message]) -> None:
        self._session._check()

    async def close(self) -> None:
        return None


class MemoryConnector(BrokerConnector):
    def __init__(self, spec: ConnectorSpec, broker: MemoryBroker, **kwargs: object) -> None:
        super().__init__(spec, **kwargs)  # type: ignore[arg-type]
        self.broker = broker

    async def _connect(self) -> _MemorySession:
        if self.broker.down:
            raise ConnectionRefusedError("memory broker is down")
        return _MemorySession(self.broker, self.spec)
