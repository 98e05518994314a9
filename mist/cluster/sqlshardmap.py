"""PgShardMapStore: the ShardMapStore of mist/cluster/shardmap.py, one PostgreSQL row per map.

compare-and-set is one statement: `UPDATE ... SET version = version + 1, body = :b WHERE name =
:n AND version = :expected RETURNING version` (for the first map, `INSERT ... ON CONFLICT DO
NOTHING RETURNING version`). A reader asks `WHERE name = :n AND version > :have`: one
primary-key lookup, and no row (nothing sent) while the map is unchanged. The body is a `json`
column, which keeps numbers as written (64-bit points exactly).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from mist.cluster.pg import connect, reachable
from mist.cluster.schema import shard_maps
from mist.cluster.shardmap import StoredMap

_NOW = sa.func.now()


class PgShardMapStore:
    def __init__(self, url: str | None = None, *, name: str = "scheduler", engine: sa.Engine | None = None) -> None:
        """`name`: which map (one per sharded service)."""
        self.engine = engine if engine is not None else connect(url or "")
        self.name = name

    def close(self) -> None:
        self.engine.dispose()

    def read(self, newer_than: int = 0) -> StoredMap | None:
        t = shard_maps.c
        stmt = sa.select(t.version, t.body).where(t.name == self.name, t.version > newer_than)
        with reachable(), self.engine.connect() as conn:
            row = conn.execute(stmt).first()
        return StoredMap(row.version, row.body) if row else None

    def compare_and_set(self, expected_version: int, body: Any) -> StoredMap | None:
        t = shard_maps.c
        if expected_version == 0:
            stmt = (
                insert(shard_maps)
                .values(name=self.name, version=1, body=body, updated_at=_NOW)
                .on_conflict_do_nothing(index_elements=[t.name])
                .returning(t.version)
            )
        else:
            stmt = (
                shard_maps.update()
                .where(t.name == self.name, t.version == expected_version)
                .values(version=t.version + 1, body=body, updated_at=_NOW)
                .returning(t.version)
            )
        with reachable(), self.engine.connect() as conn:
            version = conn.execute(stmt).scalar()
        return StoredMap(version, body) if version is not None else None
