"""SqlEvents: EventQueue + EventIndex + MessageQueues over SQLAlchemy Core (mixed into SqlStore).

Writes go through engines whose transactions hold the database's write lock from their first
statement (SQLite: BEGIN IMMEDIATE), so a claim's select-then-update is one atomic step. On
PostgreSQL the same statements run with `FOR UPDATE SKIP LOCKED`, so dispatchers on several
nodes never lease one event twice. Reads use `self.engine`.

What creates an event (enqueue, redrive) commits through `self.durable_writes`: on SQLite
synchronous=FULL, so an event that was answered 202 survives a power cut, not only a crash of
mist. Everything else (claims, settlements, leases) may be lost by a power cut without losing
an event — it runs again — so it skips the fsync (`self.writes`, synchronous=NORMAL: still
safe against a crash of mist itself).

The hot statements (insert an event, claim, settle) are plain SQL run through the driver
(`_SQL`): building them with SQLAlchemy Core cost 2-3x more CPU, on the one writer thread
that every event passes through three times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa

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
from mist.metering.usage import UsageRecord

_SQL = {
    "insert_event": (
        "INSERT INTO events (id, function, version, payload, trigger, status, created_at, due_at, attempts, "
        "function_errors, idempotency_key, source_event_id) VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, 0, 0, ?, ?)"
    ),
    "take_key": (
        'INSERT INTO idempotency_keys (function, "key", invocation_id, expires_at) VALUES (?, ?, ?, ?) '
        "ON CONFLICT (function, \"key\") DO UPDATE SET invocation_id = excluded.invocation_id, "
        "expires_at = excluded.expires_at WHERE idempotency_keys.expires_at <= ? RETURNING invocation_id"
    ),
    "key_owner": 'SELECT invocation_id FROM idempotency_keys WHERE function = ? AND "key" = ?',
    "claim": (
        "UPDATE events SET status = 'running', owner = ?, due_at = ?, attempts = attempts + 1 WHERE id IN "
        "(SELECT id FROM events WHERE function = ? AND due_at <= ? ORDER BY due_at LIMIT ?{locked}) "
        "RETURNING id, function, version, payload, trigger, created_at, attempts, function_errors"
    ),
    "close_lost": (
        "UPDATE event_attempts SET ended_at = ?, outcome = 'lost', error_type = ?, error_message = ? "
        "WHERE event_id = ? AND ended_at IS NULL"
    ),
    "open_attempt": "INSERT INTO event_attempts (event_id, attempt, started_at) VALUES (?, ?, ?)",
    "held": "SELECT id, attempts, owner FROM events WHERE status = 'running' AND id IN ({ids}){locked}",
    "settle_event": (
        "UPDATE events SET status = ?, due_at = ?, owner = NULL, function_errors = ?, condition = ?, "
        "destination = ? WHERE id = ?"
    ),
    "settle_attempt": (
        "UPDATE event_attempts SET started_at = ?, ended_at = ?, outcome = ?, error_type = ?, error_message = ?, "
        "version = ?, record_id = ? WHERE event_id = ? AND attempt = ?"
    ),
    "insert_message": (
        "INSERT INTO queue_messages (id, queue, body, sent_at, visible_at, receive_count) VALUES (?, ?, ?, ?, ?, 0)"
    ),
}


def _event_row(ev: NewEvent, now: float) -> tuple[object, ...]:
    return (ev.id, ev.function, ev.version, ev.payload, ev.trigger, now, now, ev.idempotency_key, ev.source_event_id)


class SqlEvents:
    engine: sa.Engine  # reads
    writes: sa.Engine  # leases and outcomes (see the module docstring)
    durable_writes: sa.Engine  # new events
    _insert_usage: Callable[[sa.Connection, Sequence[UsageRecord]], int]  # SqlUsage's, in settle

    @property
    def _pg(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def _sql(self, name: str, ids: int = 0) -> str:
        """A statement of _SQL in this driver's parameter style."""
        text = _SQL[name].format(locked=" FOR UPDATE SKIP LOCKED" if self._pg else "",
                                 ids=", ".join("?" * ids))  # fmt: skip
        return text.replace("?", "%s") if self.engine.dialect.paramstyle != "qmark" else text

    def _locked(self, q: sa.Select) -> sa.Select:
        return q.with_for_update(skip_locked=True) if self._pg else q

    # -- EventQueue ----------------------------------------------------------------------------

    def enqueue(self, new: Sequence[NewEvent], now: float) -> list[Enqueued]:
        out: list[Enqueued] = []
        rows: list[tuple[object, ...]] = []
        with self.durable_writes.begin() as conn:
            for ev in new:
                if ev.idempotency_key is not None:
                    first = self._take_key(conn, ev, now)
                    if first != ev.id:
                        out.append(Enqueued(first, False))
                        continue
                rows.append(_event_row(ev, now))
                out.append(Enqueued(ev.id, True))
            if rows:
                conn.exec_driver_sql(self._sql("insert_event"), rows)
        return out

    def _take_key(self, conn: sa.Connection, ev: NewEvent, now: float) -> str:
        """Record (function, key) -> ev.id unless it is taken and not expired; the id it maps to."""
        row = conn.exec_driver_sql(
            self._sql("take_key"), (ev.function, ev.idempotency_key, ev.id, now + IDEMPOTENCY_TTL_S, now)
        ).first()
        if row is not None:
            return str(row[0])
        return str(conn.exec_driver_sql(self._sql("key_owner"), (ev.function, ev.idempotency_key)).scalar_one())

    def claim(self, owner: str, function: str, now: float, *, limit: int, lease_s: float) -> list[ClaimedEvent]:
        if limit <= 0:
            return []
        with self.writes.begin() as conn:
            rows = conn.exec_driver_sql(self._sql("claim"), (owner, now + lease_s, function, now, limit)).all()
            if not rows:
                return []
            conn.exec_driver_sql(
                self._sql("close_lost"), [(now, LOST_ERROR_TYPE, LOST_ERROR_MESSAGE, r[0]) for r in rows]
            )
            conn.exec_driver_sql(self._sql("open_attempt"), [(r[0], r[6], now) for r in rows])
        return sorted(
            (ClaimedEvent(r[0], r[1], r[2], bytes(r[3]), r[4], r[5], r[6], r[7]) for r in rows),
            key=lambda e: (e.created_at, e.id),
        )

    def renew(self, owner: str, ids: Sequence[str], until: float) -> int:
        renewed = 0
        with self.writes.begin() as conn:
            for i in range(0, len(ids), 500):
                renewed += conn.execute(
                    events.update()
                    .where(events.c.id.in_(list(ids[i : i + 500])), events.c.owner == owner,
                           events.c.status == "running")
                    .values(due_at=until)
                ).rowcount  # fmt: skip
        return renewed

    def settle(self, settlements: Sequence[Settlement], now: float) -> list[bool]:
        if not settlements:
            return []
        with self.writes.begin() as conn:
            ids = list({st.event_id for st in settlements})
            held = {tuple(r) for r in conn.exec_driver_sql(self._sql("held", len(ids)), tuple(ids))}
            applied = [(st.event_id, st.attempt, st.owner) in held for st in settlements]
            done = [st for st, ok in zip(settlements, applied) if ok]
            if not done:
                return applied
            conn.exec_driver_sql(
                self._sql("settle_event"),
                [(st.status, st.due_at, st.function_errors, st.condition, st.destination, st.event_id) for st in done],
            )
            conn.exec_driver_sql(
                self._sql("settle_attempt"),
                [(st.started_at, st.ended_at, st.outcome, st.error_type, st.error_message, st.version, st.record_id,
                  st.event_id, st.attempt) for st in done],
            )  # fmt: skip
            sent = [(new_invocation_id(), m.queue, m.body, now, now) for st in done for m in st.messages]
            if sent:
                conn.exec_driver_sql(self._sql("insert_message"), sent)
            chained = [_event_row(ev, now) for st in done for ev in st.events]
            if chained:
                conn.exec_driver_sql(self._sql("insert_event"), chained)
            billed = [st.usage for st in done if st.usage is not None]
            if billed:
                self._insert_usage(conn, billed)
        return applied

    def release(self, now: float, owner: str | None = None) -> int:
        q = events.update().where(events.c.due_at.is_not(None), events.c.status == "running")  # the pending index
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

    def send(self, queue: str, bodies: Sequence[bytes], now: float) -> list[str]:
        rows = [(new_invocation_id(), queue, body, now, now) for body in bodies]
        if rows:
            with self.durable_writes.begin() as conn:
                conn.exec_driver_sql(self._sql("insert_message"), rows)
        return [r[0] for r in rows]

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
        with self.durable_writes.begin() as conn:
            for message_id, ev in moves:
                gone = conn.execute(
                    messages.delete().where(messages.c.queue == queue, messages.c.id == message_id)
                ).rowcount
                if gone:
                    conn.exec_driver_sql(self._sql("insert_event"), _event_row(ev, now))
                out.append(ev.id if gone else None)
        return out


def _message(r: sa.Row) -> QueueMessage:
    return QueueMessage(r.id, r.queue, bytes(r.body), r.sent_at, r.receive_count)
