"""EventService: asynchronous invocations in (`enqueue`) and their status out (`get`).

`enqueue(function, payload, *, trigger, idempotency_key, source_event_id) -> invocation id` is
the one entry point of every event source: the API (`X-Mist-Invocation-Type: Event`, trigger
"event"), destinations, redrive, and the S3 / cron / message-queue connectors. It returns once
the event is committed to the database (group commit: concurrent enqueues share one
transaction), so an id handed out is an event that will run at least once, whatever crashes
after. The dispatcher (dispatcher.py) is told at once, so the event usually starts within a
millisecond; it also polls, for events stored by other processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from mist.control.batching import GroupCommit, SerialWriter
from mist.control.functions import FunctionService
from mist.control.invocations import new_invocation_id
from mist.control.store import Enqueued, EventIndex, EventQueue, EventView, NewEvent
from mist.errors import InvalidRequest, PayloadTooLarge

MAX_EVENT_PAYLOAD = 1024 * 1024  # Lambda's limit for asynchronous invocations (1 MB)
MAX_KEY = 255


@dataclass(frozen=True)
class EventServiceStats:
    accepted: int  # new events stored
    duplicates: int  # enqueues answered with an earlier event's id (idempotency key)
    batches: int  # enqueue transactions (group commit: accepted / batches events each)


def check_idempotency_key(key: str, what: str = "the idempotency key") -> str:
    if not 1 <= len(key) <= MAX_KEY or not all(" " <= c <= "~" for c in key):
        raise InvalidRequest(
            f"{what} must be 1 to {MAX_KEY} printable ASCII characters (e.g. a UUID or order-1234), "
            f"got {key[:80]!r}"
        )
    return key


def event_too_large(size: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the event is {size:,} bytes; asynchronous invocations take at most {MAX_EVENT_PAYLOAD:,} bytes (1 MB). "
        "Pass large data by reference (e.g. an object-store key), or invoke synchronously (up to 6 MB)"
    )


class EventService:
    def __init__(
        self,
        functions: FunctionService,
        queue: EventQueue,
        index: EventIndex,
        writer: SerialWriter,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._functions = functions
        self._index = index
        self._wall = wall
        self._enqueue = GroupCommit(lambda batch: queue.enqueue(batch, self._wall()), writer)
        self._listeners: list[Callable[[str], None]] = []
        self._accepted = 0
        self._duplicates = 0

    def on_enqueue(self, listener: Callable[[str], None]) -> None:
        """`listener(function)` is called after events of `function` were stored (the dispatcher)."""
        self._listeners.append(listener)

    def notify(self, function: str) -> None:
        for listener in self._listeners:
            listener(function)

    async def accept(
        self,
        function: str,
        payload: bytes,
        *,
        trigger: str,
        idempotency_key: str | None = None,
        source_event_id: str | None = None,
        version: int | None = None,
    ) -> Enqueued:
        """Store one event; `created` is False when the idempotency key was used within 24 h
        (the answer is then the first event's id, and nothing new will run)."""
        if len(payload) > MAX_EVENT_PAYLOAD:
            raise event_too_large(len(payload))
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        if not 1 <= len(trigger) <= 16:
            raise InvalidRequest(f"trigger must be 1 to 16 characters, got {trigger!r}")
        await self._functions.resolve(function, version)  # NotFound before anything is stored
        new = NewEvent(new_invocation_id(), function, version, payload, trigger, idempotency_key, source_event_id)
        got = await self._enqueue.submit(new)
        if got.created:
            self._accepted += 1
            self.notify(function)
        else:
            self._duplicates += 1
        return got

    async def enqueue(
        self,
        function: str,
        payload: bytes,
        *,
        trigger: str,
        idempotency_key: str | None = None,
        source_event_id: str | None = None,
    ) -> str:
        """Store one event for `function` (its newest version when it runs); its invocation id."""
        got = await self.accept(
            function, payload, trigger=trigger, idempotency_key=idempotency_key, source_event_id=source_event_id
        )
        return got.invocation_id

    async def get(self, invocation_id: str) -> EventView | None:
        return await asyncio.to_thread(self._index.get_event, invocation_id)

    def statistics(self) -> EventServiceStats:
        return EventServiceStats(self._accepted, self._duplicates, self._enqueue.batches)
