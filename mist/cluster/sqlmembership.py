"""PgMembership: the MembershipStore of mist/cluster/membership.py over one PostgreSQL row per
worker. Heartbeats are stamped with the database's `now()` and refused once the row is older
than the timeout, judged by the same clock; a snapshot carries that clock's reading."""

from __future__ import annotations

from dataclasses import asdict, astuple
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from mist.cluster.membership import (
    Capacity,
    Heartbeat,
    InstanceReport,
    Load,
    MembershipSnapshot,
    WorkerInfo,
    WorkerRecord,
    warm_from_json,
    warm_json,
)
from mist.cluster.pg import connect, reachable
from mist.cluster.schema import workers

_NOW = sa.func.now()


def record(row: sa.Row) -> WorkerRecord:
    info = WorkerInfo(row.id, row.address, Capacity(**row.capacity), warm_from_json(row.warm))
    return WorkerRecord(
        info=info,
        incarnation=row.incarnation,
        draining=row.draining,
        registered_at=row.registered_at,
        heartbeat_at=row.heartbeat_at,
        load=Load(**row.load),
        instances=tuple(InstanceReport(*i) for i in row.instances),
    )


class PgMembership:
    def __init__(self, url: str | None = None, *, timeout_s: float, engine: sa.Engine | None = None) -> None:
        """`timeout_s`: silent this long (database clock), a worker is lost and its heartbeats
        are refused; use the HealthPolicy's `timeout_s`."""
        self.engine = engine if engine is not None else connect(url or "")
        self.timeout = timedelta(seconds=timeout_s)

    def close(self) -> None:
        self.engine.dispose()

    def register(self, info: WorkerInfo) -> WorkerRecord:
        t = workers.c
        ins = insert(workers).values(
            id=info.id,
            address=info.address,
            incarnation=1,
            draining=False,
            capacity=asdict(info.capacity),
            warm=warm_json(info.warm),
            load=asdict(Load()),
            instances=[],
            registered_at=_NOW,
            heartbeat_at=_NOW,
        )
        fresh = {c: ins.excluded[c] for c in ("address", "draining", "capacity", "warm", "load", "instances")}
        stmt = ins.on_conflict_do_update(
            index_elements=[t.id],
            set_={**fresh, "incarnation": t.incarnation + 1, "registered_at": _NOW, "heartbeat_at": _NOW},
        ).returning(workers)
        with reachable(), self.engine.connect() as conn:
            return record(conn.execute(stmt).one())

    def heartbeat(self, worker_id: str, incarnation: int, beat: Heartbeat) -> bool:
        t = workers.c
        stmt = (
            workers.update()
            .where(t.id == worker_id, t.incarnation == incarnation, t.heartbeat_at > _NOW - self.timeout)
            .values(
                heartbeat_at=_NOW,
                load=asdict(beat.load),
                warm=warm_json(beat.warm),
                instances=[astuple(i) for i in beat.instances],
            )
        )
        with reachable(), self.engine.connect() as conn:
            return conn.execute(stmt).rowcount == 1

    def set_draining(self, worker_id: str, draining: bool) -> bool:
        stmt = workers.update().where(workers.c.id == worker_id).values(draining=draining)
        with reachable(), self.engine.connect() as conn:
            return conn.execute(stmt).rowcount == 1

    def leave(self, worker_id: str, incarnation: int) -> bool:
        stmt = workers.delete().where(workers.c.id == worker_id, workers.c.incarnation == incarnation)
        with reachable(), self.engine.connect() as conn:
            return conn.execute(stmt).rowcount == 1

    def snapshot(self) -> MembershipSnapshot:
        # The rows and the clock they are judged by come from one statement, one instant.
        stmt = sa.select(workers, _NOW.label("db_now")).order_by(workers.c.id)
        with reachable(), self.engine.connect() as conn:
            rows = conn.execute(stmt).all()
            now = rows[0].db_now if rows else conn.execute(sa.select(_NOW)).scalar_one()
        return MembershipSnapshot(now=now, workers=tuple(record(r) for r in rows))
