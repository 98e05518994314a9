"""PgShardMapStore: the ShardMapStore of mist/cluster/shardmap.py, one PostgreSQL row per map.

compare-and-set is one statement: `UPDATE ... SET version = version + 1 ... WHERE name = :n AND
version = :expected RETURNING version` (or, for the first map, `INSERT ... ON CONFLICT DO
NOTHING RETURNING`); a reader asks `WHERE name = :n AND version > :have`, which costs one
primary-key lookup and returns no row while the map is unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from mist.cluster.pg import connect, reachable
from mist.cluster.schema import shard_maps
from mist.cluster.shardmap import ShardMap, ShardRange, check_ranges

_NOW = sa.func.now()


def _rows(shards: Sequence[ShardRange]) -> list[list[object]]:
    return [[s.lo, s.hi, s.shard, s.owner, s.epoch] for s in shards]


class PgShardMapStore:
    def __init__(self, url: str | None = None, *, name: str = "scheduler", engine: sa.Engine | None = None) -> None:
        self.engine = engine if engine is not None else connect(url or "")
        self.name = name

    def close(self) -> None:
        self.engine.dispose()

    def read(self, newer_than: int = 0) -> ShardMap | None:
        t = shard_maps.c
        stmt = sa.select(t.version, t.space, t.shards).where(t.name == self.name, t.version > newer_than)
        with reachable(), self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        if row is None:
            return None
        return ShardMap(row.version, row.space, tuple(ShardRange(*s) for s in row.shards))

    def compare_and_set(self, expected_version: int, space: int, shards: Sequence[ShardRange]) -> ShardMap | None:
        check_ranges(space, shards)
        t = shard_maps.c
        values = {"space": space, "shards": _rows(shards), "updated_at": _NOW}
        if expected_version == 0:
            stmt = (
                insert(shard_maps)
                .values(name=self.name, version=1, **values)
                .on_conflict_do_nothing(index_elements=[t.name])
                .returning(t.version)
            )
        else:
            stmt = (
                shard_maps.update()
                .where(t.name == self.name, t.version == expected_version)
                .values(version=t.version + 1, **values)
                .returning(t.version)
            )
        with reachable(), self.engine.connect() as conn:
            version = conn.execute(stmt).scalar()
        return ShardMap(version, space, tuple(shards)) if version is not None else None
