"""MemoryStore: every store of mist/control/store.py in memory (passes the same contract tests);
the usage ledger's part is in usage.py."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from mist.control.invocations import new_invocation_id
from mist.control.store import (
    IDEMPOTENCY_TTL_S,
    LOST_ERROR_MESSAGE,
    LOST_ERROR_TYPE,
    AttemptView,
    ClaimedEvent,
    Enqueued,
    EventView,
    NewEvent,
    NewVersion,
    QueueMessage,
    QueueSummary,
    Settlement,
)
from mist.models import FunctionSummary, FunctionVersion, InvocationRecord, LogRecord
from mist.testing.usage import MemoryUsage

@dataclass
class _Event:
    new: NewEvent
    created_at: float
    status: str = "queued"
    due_at: float | None = None
    owner: str | None = None
    attempts: list[AttemptView] = field(default_factory=list)
    function_errors: int = 0
    condition: str | None = None
    destination: str | None = None


@dataclass
class _Message:
    id: str
    queue: str
    body: bytes
    sent_at: float
    visible_at: float
    receive_count: int = 0

    def view(self) -> QueueMessage:
        return QueueMessage(self.id, self.queue, self.body, self.sent_at, self.receive_count)


class MemoryStore(MemoryUsage):
    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._versions: dict[str, list[FunctionVersion]] = {}
        self._created: dict[str, tuple[datetime, datetime]] = {}
        self._records: dict[str, InvocationRecord] = {}
        self._logs: list[LogRecord] = []
        self._events: dict[str, _Event] = {}
        self._keys: dict[tuple[str, str], tuple[str, float]] = {}  # -> (invocation id, expires at)
        self._messages: dict[str, _Message] = {}

    def create_version(self, new: NewVersion, now: datetime) -> FunctionVersion:
        with self._lock:
            existing = self._versions.setdefault(new.name, [])
            fv = new.numbered(existing[-1].version + 1 if existing else 1, now)
            existing.append(fv)
            created = self._created.get(new.name, (now, now))[0]
            self._created[new.name] = (created, now)
            return fv

    def get_function(self, name: str) -> FunctionSummary | None:
        with self._lock:
            if not self._versions.get(name):
                return None
            created, updated = self._created[name]
            return FunctionSummary(name, created, updated, self._versions[name][-1])

    def list_functions(self) -> list[FunctionSummary]:
        names = sorted(n for n, v in self._versions.items() if v)
        return [s for s in (self.get_function(n) for n in names) if s is not None]

    def get_versions(self, name: str, version: int | None = None) -> list[FunctionVersion]:
        with self._lock:
            found = list(reversed(self._versions.get(name, [])))
        return [v for v in found if version is None or v.version == version]

    def delete_function(self, name: str) -> bool:
        with self._lock:
            self._created.pop(name, None)
            return bool(self._versions.pop(name, None))

    def code_in_use(self) -> set[str]:
        with self._lock:
            return {v.code_sha256 for vs in self._versions.values() for v in vs}

    def add_invocations(self, batch: list[tuple[InvocationRecord, list[LogRecord]]]) -> None:
        with self._lock:
            for rec, logs in batch:
                if rec.id in self._records:
                    continue
                self._records[rec.id] = replace(rec)
                self._logs.extend(logs)

    def get_invocation(self, invocation_id: str) -> tuple[InvocationRecord, list[LogRecord]] | None:
        with self._lock:
            rec = self._records.get(invocation_id)
            if rec is None:
                return None
            return rec, [l for l in self._logs if l.invocation_id == invocation_id]

    def list_invocations(self, function: str, limit: int) -> list[InvocationRecord]:
        with self._lock:
            found = [r for r in self._records.values() if r.function == function]
        return sorted(found, key=lambda r: r.started_at, reverse=True)[:limit]

    def list_logs(self, function: str, *, invocation_id: str | None = None, limit: int = 200) -> list[LogRecord]:
        with self._lock:
            found = [
                l
                for l in self._logs
                if l.function == function and (invocation_id is None or l.invocation_id == invocation_id)
            ]
        return found[-limit:] if limit else []

    # -- EventQueue ----------------------------------------------------------------------------

    def enqueue(self, new: Sequence[NewEvent], now: float) -> list[Enqueued]:
        out = []
        with self._lock:
            for ev in new:
                if ev.idempotency_key is not None:
                    key = (ev.function, ev.idempotency_key)
                    first = self._keys.get(key)
                    if first is not None and first[1] > now:
                        out.append(Enqueued(first[0], False))
                        continue
                    self._keys[key] = (ev.id, now + IDEMPOTENCY_TTL_S)
                self._events[ev.id] = _Event(ev, now, due_at=now)
                out.append(Enqueued(ev.id, True))
        return out

    def claim(self, owner: str, function: str, now: float, *, limit: int, lease_s: float) -> list[ClaimedEvent]:
        with self._lock:
            due = sorted(
                (e for e in self._events.values()
                 if e.new.function == function and e.due_at is not None and e.due_at <= now),
                key=lambda e: e.due_at or 0.0,
            )[: max(limit, 0)]  # fmt: skip
            out = []
            for e in due:
                if e.attempts and e.attempts[-1].ended_at is None:
                    e.attempts[-1] = replace(e.attempts[-1], ended_at=now, outcome="lost",
                                             error_type=LOST_ERROR_TYPE, error_message=LOST_ERROR_MESSAGE)  # fmt: skip
                e.status, e.owner, e.due_at = "running", owner, now + lease_s
                e.attempts.append(AttemptView(len(e.attempts) + 1, now, None, None, None, None, None, None))
                n = e.new
                out.append(ClaimedEvent(n.id, n.function, n.version, n.payload, n.trigger, e.created_at,
                                        len(e.attempts), e.function_errors))  # fmt: skip
        return sorted(out, key=lambda c: (c.created_at, c.id))

    def renew(self, owner: str, ids: Sequence[str], until: float) -> int:
        with self._lock:
            found = (self._events.get(i) for i in set(ids))
            held = [e for e in found if e is not None and e.owner == owner and e.status == "running"]
            for e in held:
                e.due_at = until
        return len(held)

    def settle(self, settlements: Sequence[Settlement], now: float) -> list[bool]:
        applied = []
        with self._lock:
            for s in settlements:
                e = self._events.get(s.event_id)
                ok = e is not None and e.status == "running" and e.owner == s.owner and len(e.attempts) == s.attempt
                applied.append(ok)
                if not ok or e is None:
                    continue
                e.status, e.due_at, e.owner = s.status, s.due_at, None
                e.function_errors, e.condition, e.destination = s.function_errors, s.condition, s.destination
                e.attempts[-1] = replace(e.attempts[-1], started_at=s.started_at, ended_at=s.ended_at,
                                         outcome=s.outcome, error_type=s.error_type, error_message=s.error_message,
                                         version=s.version, record_id=s.record_id)  # fmt: skip
                for m in s.messages:
                    mid = new_invocation_id()
                    self._messages[mid] = _Message(mid, m.queue, m.body, now, now)
                for ev in s.events:
                    self._events[ev.id] = _Event(ev, now, due_at=now)
                if s.usage is not None:
                    self._store_usage([s.usage])
        return applied

    def release(self, now: float, owner: str | None = None) -> int:
        with self._lock:
            held = [e for e in self._events.values() if e.status == "running" and owner in (None, e.owner)]
            for e in held:
                e.due_at = now
        return len(held)

    def purge(self, now: float) -> int:
        with self._lock:
            old = [k for k, (_, expires) in self._keys.items() if expires <= now]
            for k in old:
                del self._keys[k]
        return len(old)

    # -- EventIndex ----------------------------------------------------------------------------

    def pending(self) -> dict[str, float]:
        out: dict[str, float] = {}
        with self._lock:
            for e in self._events.values():
                if e.due_at is not None:
                    out[e.new.function] = min(out.get(e.new.function, e.due_at), e.due_at)
        return out

    def get_event(self, event_id: str) -> EventView | None:
        with self._lock:
            e = self._events.get(event_id)
            if e is None:
                return None
            n = e.new
            return EventView(n.id, n.function, n.version, n.trigger, e.status, e.created_at, e.due_at,
                             e.function_errors, e.condition, e.destination, n.idempotency_key, n.source_event_id,
                             tuple(e.attempts))  # fmt: skip

    # -- MessageQueues -------------------------------------------------------------------------

    def send(self, queue: str, bodies: Sequence[bytes], now: float) -> list[str]:
        ids = []
        with self._lock:
            for body in bodies:
                mid = new_invocation_id()
                self._messages[mid] = _Message(mid, queue, body, now, now)
                ids.append(mid)
        return ids

    def list_queues(self, now: float) -> list[QueueSummary]:
        with self._lock:
            names = sorted({m.queue for m in self._messages.values()})
            return [
                QueueSummary(q, sum(m.queue == q for m in self._messages.values()),
                             sum(m.queue == q and m.visible_at <= now for m in self._messages.values()))
                for q in names
            ]  # fmt: skip

    def peek(self, queue: str, *, limit: int, message_id: str | None = None) -> list[QueueMessage]:
        with self._lock:
            found = sorted((m for m in self._messages.values() if m.queue == queue), key=lambda m: m.id)
        return [m.view() for m in found if message_id in (None, m.id)][:limit]

    def receive(self, queue: str, now: float, *, limit: int, visibility_s: float) -> list[QueueMessage]:
        with self._lock:
            found = sorted(
                (m for m in self._messages.values() if m.queue == queue and m.visible_at <= now), key=lambda m: m.id
            )[:limit]
            for m in found:
                m.visible_at = now + visibility_s
                m.receive_count += 1
            return [m.view() for m in found]

    def delete(self, queue: str, ids: Sequence[str]) -> int:
        with self._lock:
            gone = [i for i in set(ids) if i in self._messages and self._messages[i].queue == queue]
            for i in gone:
                del self._messages[i]
        return len(gone)

    def redrive(self, queue: str, moves: Sequence[tuple[str, NewEvent]], now: float) -> list[str | None]:
        out: list[str | None] = []
        with self._lock:
            for message_id, ev in moves:
                m = self._messages.get(message_id)
                if m is None or m.queue != queue:
                    out.append(None)
                    continue
                del self._messages[message_id]
                self._events[ev.id] = _Event(ev, now, due_at=now)
                out.append(ev.id)
        return out
