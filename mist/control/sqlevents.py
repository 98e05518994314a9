"""SqlEvents: EventQueue + EventIndex + MessageQueues over SQLAlchemy Core (mixed into SqlStore).

Writes go through `self.writes`, an engine whose transactions hold the database's write lock
from their first statement (SQLite: BEGIN IMMEDIATE, and synchronous=FULL so a committed event
survives a power cut, not only a crash of mist) — so a claim's select-then-update is one
atomic step. On PostgreSQL the same statements run with `FOR UPDATE SKIP LOCKED`, so
dispatchers on several nodes never lease one event twice. Reads use `self.engine`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from mist.control.invocations import new_invocation_id
from mist.control.sqlschema import event_attempts, events, idempotency_keys, messages
from mist.control.store import (
    IDEMPOTENCY_TTL_S,
    LOST_ERROR_MESSAGE,
    LOST_ERROR_TYPE,
    AttemptView,
    ClaimedEvent,
    Enqueued,
    EventView,
    NewEvent,
    QueueMessage,
    QueueSummary,
    Settlement,
)

_CLAIMED = [
    events.c.id, events.c.function, events.c.version, events.c.payload, events.c.trigger,
    events.c.created_at, events.c.attempts, events.c.function_errors,
]  # fmt: skip


def _event_row(ev: NewEvent, now: float) -> dict[str, object]:
    return {
        "id": ev.id, "function": ev.function, "version": ev.version, "payload": ev.payload,
        "trigger": ev.trigger, "status": "queued", "created_at": now, "due_at": now, "owner": None,
        "attempts": 0, "function_errors": 0, "idempotency_key": ev.idempotency_key,
        "source_event_id": ev.source_event_id,
    }  # fmt: skip


class SqlEvents:
    engine: sa.Engine  # reads
    writes: sa.Engine  # event writes (see the module docstring)

    @property
    def _pg(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def _locked(self, q: sa.Select) -> sa.Select:
        return q.with_for_update(skip_locked=True) if self._pg else q

    # -- EventQueue ----------------------------------------------------------------------------

    def enqueue(self, new: Sequence[NewEvent], now: float) -> list[Enqueued]:
        out: list[Enqueued] = []
        rows: list[dict[str, object]] = []
        with self.writes.begin() as conn:
            for ev in new:
                if ev.idempotency_key is not None:
                    first = self._take_key(conn, ev, now)
                    if first != ev.id:
                        out.append(Enqueued(first, False))
                        continue
                rows.append(_event_row(ev, now))
                out.append(Enqueued(ev.id, True))
            if rows:
                conn.execute(events.insert(), rows)
        return out

    def _take_key(self, conn: sa.Connection, ev: NewEvent, now: float) -> str:
        """Record (function, key) -> ev.id unless it is taken and not expired; the id it maps to."""
        insert = (postgresql.insert if self._pg else sqlite.insert)(idempotency_keys)
        k = idempotency_keys.c
        stmt = (
            insert.values(function=ev.function, key=ev.idempotency_key, invocation_id=ev.id,
                          expires_at=now + IDEMPOTENCY_TTL_S)
            .on_conflict_do_update(
                index_elements=[k.function, k.key],
                set_={"invocation_id": insert.excluded.invocation_id, "expires_at": insert.excluded.expires_at},
                where=k.expires_at <= now,
            )
            .returning(k.invocation_id)
        )  # fmt: skip
        row = conn.execute(stmt).first()
        if row is not None:
            return str(row[0])
        return str(
            conn.execute(
                sa.select(k.invocation_id).where(k.function == ev.function, k.key == ev.idempotency_key)
            ).scalar_one()
        )

    def claim(self, owner: str, function: str, now: float, *, limit: int, lease_s: float) -> list[ClaimedEvent]:
        if limit <= 0:
            return []
        due = self._locked(
            sa.select(events.c.id)
            .where(events.c.function == function, events.c.due_at <= now)
            .order_by(events.c.due_at)
            .limit(limit)
        )
        with self.writes.begin() as conn:
            rows = conn.execute(
                events.update()
                .where(events.c.id.in_(due.scalar_subquery()))
                .values(status="running", owner=owner, due_at=now + lease_s, attempts=events.c.attempts + 1)
                .returning(*_CLAIMED)
            ).all()
            if not rows:
                return []
            ids = [r.id for r in rows]
            conn.execute(
                event_attempts.update()
                .where(event_attempts.c.event_id.in_(ids), event_attempts.c.ended_at.is_(None))
                .values(ended_at=now, outcome="lost", error_type=LOST_ERROR_TYPE, error_message=LOST_ERROR_MESSAGE)
            )
            conn.execute(
                event_attempts.insert(),
                [{"event_id": r.id, "attempt": r.attempts, "started_at": now} for r in rows],
            )
        return sorted(
            (ClaimedEvent(r.id, r.function, r.version, bytes(r.payload), r.trigger, r.created_at, r.attempts,
                          r.function_errors) for r in rows),
            key=lambda e: (e.created_at, e.id),
        )  # fmt: skip

    def renew(self, owner: str, until: float) -> int:
        with self.writes.begin() as conn:
            return conn.execute(
                events.update()
                .where(events.c.owner == owner, events.c.status == "running")
                .values(due_at=until)
            ).rowcount

    def settle(self, settlements: Sequence[Settlement], now: float) -> list[bool]:
        if not settlements:
            return []
        b = sa.bindparam
        with self.writes.begin() as conn:
            held = {
                tuple(r)
                for r in conn.execute(
                    self._locked(
                        sa.select(events.c.id, events.c.attempts, events.c.owner).where(
                            events.c.id.in_([s.event_id for s in settlements]), events.c.status == "running"
                        )
                    )
                )
            }
            applied = [(s.event_id, s.attempt, s.owner) in held for s in settlements]
            done = [s for s, ok in zip(settlements, applied) if ok]
            if not done:
                return applied
            conn.execute(
                events.update()
                .where(events.c.id == b("b_id"))
                .values(status=b("b_status"), due_at=b("b_due"), owner=None, function_errors=b("b_errors"),
                        condition=b("b_condition"), destination=b("b_destination")),
                [{"b_id": s.event_id, "b_status": s.status, "b_due": s.due_at, "b_errors": s.function_errors,
                  "b_condition": s.condition, "b_destination": s.destination} for s in done],
            )  # fmt: skip
            conn.execute(
                event_attempts.update()
                .where(event_attempts.c.event_id == b("b_id"), event_attempts.c.attempt == b("b_attempt"))
                .values(started_at=b("b_started"), ended_at=b("b_ended"), outcome=b("b_outcome"),
                        error_type=b("b_type"), error_message=b("b_message"), version=b("b_version"),
                        record_id=b("b_record")),
                [{"b_id": s.event_id, "b_attempt": s.attempt, "b_started": s.started_at, "b_ended": s.ended_at,
                  "b_outcome": s.outcome, "b_type": s.error_type, "b_message": s.error_message,
                  "b_version": s.version, "b_record": s.record_id} for s in done],
            )  # fmt: skip
            sent = [m for s in done for m in s.messages]
            if sent:
                conn.execute(messages.insert(), [_message_row(m.queue, m.body, now) for m in sent])
            chained = [_event_row(ev, now) for s in done for ev in s.events]
            if chained:
                conn.execute(events.insert(), chained)
        return applied

    def release(self, now: float, owner: str | None = None) -> int:
        q = events.update().where(events.c.status == "running")
        if owner is not None:
            q = q.where(events.c.owner == owner)
        with self.writes.begin() as conn:
            return conn.execute(q.values(due_at=now)).rowcount

    def purge(self, now: float) -> int:
        with self.writes.begin() as conn:
            return conn.execute(idempotency_keys.delete().where(idempotency_keys.c.expires_at <= now)).rowcount

    # -- EventIndex ----------------------------------------------------------------------------

    def pending(self) -> dict[str, float]:
        q = (
            sa.select(events.c.function, sa.func.min(events.c.due_at))
            .where(events.c.due_at.is_not(None))
            .group_by(events.c.function)
        )
        with self.engine.connect() as conn:
            return {r[0]: float(r[1]) for r in conn.execute(q)}

    def get_event(self, event_id: str) -> EventView | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(events).where(events.c.id == event_id)).first()
            if r is None:
                return None
            attempts = conn.execute(
                sa.select(event_attempts)
                .where(event_attempts.c.event_id == event_id)
                .order_by(event_attempts.c.attempt)
            ).all()
        return EventView(
            id=r.id, function=r.function, version=r.version, trigger=r.trigger, status=r.status,
            created_at=r.created_at, due_at=r.due_at, function_errors=r.function_errors, condition=r.condition,
            destination=r.destination, idempotency_key=r.idempotency_key, source_event_id=r.source_event_id,
            attempts=tuple(
                AttemptView(a.attempt, a.started_at, a.ended_at, a.outcome, a.error_type, a.error_message,
                            a.version, a.record_id)
                for a in attempts
            ),
        )  # fmt: skip

    # -- MessageQueues -------------------------------------------------------------------------

    def list_queues(self, now: float) -> list[QueueSummary]:
        m = messages.c
        q = (
            sa.select(m.queue, sa.func.count(), sa.func.sum(sa.case((m.visible_at <= now, 1), else_=0)))
            .group_by(m.queue)
            .order_by(m.queue)
        )
        with self.engine.connect() as conn:
            return [QueueSummary(r[0], int(r[1]), int(r[2] or 0)) for r in conn.execute(q)]

    def peek(self, queue: str, *, limit: int, message_id: str | None = None) -> list[QueueMessage]:
        q = sa.select(messages).where(messages.c.queue == queue).order_by(messages.c.id).limit(limit)
        if message_id is not None:
            q = q.where(messages.c.id == message_id)
        with self.engine.connect() as conn:
            return [_message(r) for r in conn.execute(q)]

    def receive(self, queue: str, now: float, *, limit: int, visibility_s: float) -> list[QueueMessage]:
        m = messages.c
        visible = self._locked(
            sa.select(m.id).where(m.queue == queue, m.visible_at <= now).order_by(m.id).limit(limit)
        )
        with self.writes.begin() as conn:
            rows = conn.execute(
                messages.update()
                .where(m.id.in_(visible.scalar_subquery()))
                .values(visible_at=now + visibility_s, receive_count=m.receive_count + 1)
                .returning(messages)
            ).all()
        return sorted((_message(r) for r in rows), key=lambda x: x.id)

    def delete(self, queue: str, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        with self.writes.begin() as conn:
            return conn.execute(
                messages.delete().where(messages.c.queue == queue, messages.c.id.in_(list(ids)))
            ).rowcount

    def redrive(self, queue: str, moves: Sequence[tuple[str, NewEvent]], now: float) -> list[str | None]:
        out: list[str | None] = []
        with self.writes.begin() as conn:
            for message_id, ev in moves:
                gone = conn.execute(
                    messages.delete().where(messages.c.queue == queue, messages.c.id == message_id)
                ).rowcount
                if gone:
                    conn.execute(events.insert().values(**_event_row(ev, now)))
                out.append(ev.id if gone else None)
        return out


def _message_row(queue: str, body: bytes, now: float) -> dict[str, object]:
    return {"id": new_invocation_id(), "queue": queue, "body": body, "sent_at": now, "visible_at": now,
            "receive_count": 0}  # fmt: skip


def _message(r: sa.Row) -> QueueMessage:
    return QueueMessage(r.id, r.queue, bytes(r.body), r.sent_at, r.receive_count)
