"""PgLeaseStore: the LeaseStore of mist/cluster/leases.py over lease rows in PostgreSQL.

Each operation is one statement, atomic on the lease's row, with expiry judged by the
database's `now()` (the same value for the test and for the new expiry). Acquire:

    INSERT INTO cluster_leases VALUES (:name, :me, nextval('cluster_lease_epochs'), now(), now() + :ttl)
    ON CONFLICT (name) DO UPDATE
       SET holder = :me, expires_at = now() + :ttl,
           epoch = CASE WHEN <live and mine> THEN epoch ELSE excluded.epoch END, ...
     WHERE cluster_leases.expires_at <= now() OR cluster_leases.holder = :me
    RETURNING holder, epoch, expires_at

Concurrent acquirers of one row queue on its row lock; each re-reads the row the one before it
committed, so exactly one sees it expired (read committed is enough: PostgreSQL re-checks the
WHERE on the newest row version). The sequence may skip numbers (a refused acquire draws one
too); epochs need only grow. Renew and release match on (name, holder, epoch) and on the
lease being live, so a holder that lost its lease touches nothing; `renew_all` renews all of a
holder's leases in one statement (one WAL flush, however many shards it owns).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from mist.cluster.leases import Lease
from mist.cluster.pg import connect, reachable
from mist.cluster.schema import lease_epochs, leases

_NOW = sa.func.now()


def _ttl(ttl_s: float) -> sa.BindParameter[timedelta]:
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
    return sa.bindparam("ttl", timedelta(seconds=ttl_s), type_=sa.Interval)


class PgLeaseStore:
    def __init__(self, url: str | None = None, *, engine: sa.Engine | None = None) -> None:
        """`url`: postgresql+psycopg://...; or share another cluster store's `engine`."""
        self.engine = engine if engine is not None else connect(url or "")

    def close(self) -> None:
        self.engine.dispose()

    def _one(self, stmt: sa.Executable, name: str) -> Lease | None:
        with reachable(), self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return Lease(name, row.holder, row.epoch, row.expires_at) if row else None

    def acquire(self, name: str, holder: str, ttl_s: float) -> Lease | None:
        t = leases.c
        ins = insert(leases).values(
            name=name, holder=holder, epoch=lease_epochs.next_value(), acquired_at=_NOW, expires_at=_NOW + _ttl(ttl_s)
        )
        mine = sa.and_(t.holder == ins.excluded.holder, t.expires_at > _NOW)
        stmt = ins.on_conflict_do_update(
            index_elements=[t.name],
            set_={
                "holder": ins.excluded.holder,
                "epoch": sa.case((mine, t.epoch), else_=ins.excluded.epoch),
                "acquired_at": sa.case((mine, t.acquired_at), else_=_NOW),
                "expires_at": ins.excluded.expires_at,
            },
            where=sa.or_(t.expires_at <= _NOW, t.holder == ins.excluded.holder),
        ).returning(t.holder, t.epoch, t.expires_at)
        return self._one(stmt, name)

    def _live(self, held: Sequence[Lease]) -> sa.ColumnElement[bool]:
        t = leases.c
        keys = [(lease.name, lease.holder, lease.epoch) for lease in held]
        return sa.and_(sa.tuple_(t.name, t.holder, t.epoch).in_(keys), t.expires_at > _NOW)

    def renew(self, lease: Lease, ttl_s: float) -> Lease | None:
        renewed = self.renew_all([lease], ttl_s)
        return renewed[0] if renewed else None

    def renew_all(self, held: Sequence[Lease], ttl_s: float) -> list[Lease]:
        if not held:
            return []
        t = leases.c
        stmt = (
            leases.update()
            .where(self._live(held))
            .values(expires_at=_NOW + _ttl(ttl_s))
            .returning(t.name, t.holder, t.epoch, t.expires_at)
        )
        with reachable(), self.engine.connect() as conn:
            return [Lease(*row) for row in conn.execute(stmt).all()]

    def release(self, lease: Lease) -> bool:
        stmt = leases.update().where(self._live([lease])).values(expires_at=_NOW).returning(leases.c.epoch)
        with reachable(), self.engine.connect() as conn:
            return conn.execute(stmt).first() is not None

    def current(self, name: str) -> Lease | None:
        t = leases.c
        stmt = sa.select(t.holder, t.epoch, t.expires_at).where(t.name == name, t.expires_at > _NOW)
        return self._one(stmt, name)

    def floors(self, names: Iterable[str]) -> dict[str, int]:
        t = leases.c
        floor = sa.case((t.expires_at > _NOW, t.epoch), else_=t.epoch + 1)
        stmt = sa.select(t.name, floor).where(t.name.in_(list(names)))
        with reachable(), self.engine.connect() as conn:
            return {name: epoch for name, epoch in conn.execute(stmt).all()}
