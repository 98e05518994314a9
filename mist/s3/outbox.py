"""The bucket-notification outbox: object events waiting for the dispatcher, at least once.

Every successful object create (Put, Copy, CompleteMultipartUpload) and delete (of a key that
existed) inserts one row in the same transaction as the object's metadata, so an event exists
if and only if the change committed. The dispatcher reads and acknowledges:

    while True:
        events = await outbox.pending_events(100)       # oldest first
        for e in events: deliver(e.record)               # S3's notification record (events.py)
        await outbox.ack_events([e.id for e in events])  # only now are they deleted
        if not events:
            await outbox.wait_for_events(5.0)            # wakes at once when a commit adds one

An event is deleted only when acknowledged, so a crash between delivery and ack delivers it
again. `wait_for_events` is woken by commits in this process; with several processes on one
PostgreSQL database, its timeout is the polling interval for the others' events.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import sqlalchemy as sa

from mist.s3 import db as tables
from mist.s3.db import Database
from mist.s3.events import event_record, sequencer


@dataclass(frozen=True)
class OutboxEvent:
    id: int
    bucket: str
    key: str
    event_name: str
    record: dict[str, Any]
    created_at: datetime
    owner: str = ""  # the bucket's owner (its tenant): only that tenant's triggers see the event


class Outbox(Protocol):
    async def pending_events(self, limit: int = 100) -> list[OutboxEvent]: ...

    async def ack_events(self, ids: list[int]) -> None: ...

    async def wait_for_events(self, timeout: float) -> bool: ...


class Wakeup:
    """An asyncio.Event that any thread may set (after a commit); a waiter clears it on waking."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def notify(self) -> None:
        with self._lock:
            loop, event = self._loop, self._event
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout: float) -> bool:
        """True when woken, False on timeout. The first wait in a loop returns at once."""
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._loop is not loop or self._event is None:
                self._loop, self._event = loop, asyncio.Event()
                self._event.set()  # a commit may have come before anyone waited here
            event = self._event
        try:
            # not asyncio.wait_for: on 3.11 it loses a cancellation that comes as the event is
            # set, and a loop waiting here then outlives the stop() that cancelled it
            async with asyncio.timeout(timeout):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            event.clear()


class SqlOutbox:
    """The outbox over the object store's database (SQLite or PostgreSQL)."""

    def __init__(self, db: Database, wakeup: Wakeup, *, region: str = "us-east-1") -> None:
        self._db = db
        self._wakeup = wakeup
        self.region = region

    def _pending(self, limit: int) -> list[OutboxEvent]:
        t = tables.outbox
        owners = tables.buckets
        query = (
            sa.select(t, owners.c.owner)
            .select_from(t.outerjoin(owners, owners.c.name == t.c.bucket))
            .order_by(t.c.id)
            .limit(limit)
        )
        with self._db.read() as conn:
            rows = conn.execute(query).all()
        return [
            OutboxEvent(
                id=r.id, bucket=r.bucket, key=r.key, event_name=r.event_name,
                record=event_record(
                    event_name=r.event_name, bucket=r.bucket, key=r.key, size=r.size, etag=r.etag,
                    sequencer=sequencer(r.id), event_time=r.created_at, region=self.region,
                    principal=r.principal, source_ip=r.source_ip, request_id=r.request_id, owner=r.owner or "",
                ),
                created_at=datetime.fromtimestamp(r.created_at, timezone.utc),
                owner=r.owner or "",
            )
            for r in rows
        ]  # fmt: skip

    def _ack(self, ids: list[int]) -> None:
        with self._db.write() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                conn.execute(tables.outbox.delete().where(tables.outbox.c.id.in_(chunk)))

    async def pending_events(self, limit: int = 100) -> list[OutboxEvent]:
        return await asyncio.to_thread(self._pending, limit)

    async def ack_events(self, ids: list[int]) -> None:
        if ids:
            await asyncio.to_thread(self._ack, list(ids))

    async def wait_for_events(self, timeout: float) -> bool:
        return await self._wakeup.wait(timeout)


class MemoryOutbox:
    """An in-memory Outbox for testing a dispatcher: `add` what a commit would have written."""

    def __init__(self) -> None:
        self._events: dict[int, OutboxEvent] = {}
        self._next = 1
        self._wakeup = Wakeup()

    def add(
        self, bucket: str, key: str, event_name: str, *, size: int | None = None, etag: str | None = None,
        at: float = 0.0, owner: str = "default",
    ) -> OutboxEvent:
        event_id, self._next = self._next, self._next + 1
        record = event_record(
            event_name=event_name, bucket=bucket, key=key, size=size, etag=etag,
            sequencer=sequencer(event_id), event_time=at, owner=owner,
        )
        event = OutboxEvent(event_id, bucket, key, event_name, record, datetime.fromtimestamp(at, timezone.utc), owner)
        self._events[event_id] = event
        self._wakeup.notify()
        return event

    async def pending_events(self, limit: int = 100) -> list[OutboxEvent]:
        return [self._events[i] for i in sorted(self._events)[:limit]]

    async def ack_events(self, ids: list[int]) -> None:
        for i in ids:
            self._events.pop(i, None)

    async def wait_for_events(self, timeout: float) -> bool:
        return await self._wakeup.wait(timeout)
