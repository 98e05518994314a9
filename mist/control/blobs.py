"""Shared blobs: function code archives and dependency layers kept in the cluster's database, so
every `mist up --db` process can run every function (docs/cluster.md).

    code_blobs (kind, key) -> sha256, size, data, created_at
      kind "code":  key = sha256 of the uploaded zip (the name of its DATA/code/<sha256>/ dir)
      kind "layer": key = the layer key (sha256 of requirements.txt); data = the built layer's
                    python/ tree as a tar.gz (pip runs once per cluster, not once per process)

The process a deploy reaches puts the blob once (put is idempotent: a blob is content-addressed
or, for a layer, named by what it was built from); a process asked to run a version whose code
or layer it lacks gets the blob, checks its sha256 and extracts it into its own data dir
(FunctionService.materialise). One `mist up` on SQLite keeps no blobs: its data dir is the copy.
"""

from __future__ import annotations

import hashlib
import time
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from mist.errors import PlatformError

metadata = sa.MetaData()

code_blobs = sa.Table(
    "code_blobs",
    metadata,
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("sha256", sa.String(64), nullable=False),  # of `data`, checked by every reader
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),  # PostgreSQL: bytea (at most 1 GB)
    sa.Column("created_at", sa.Float, nullable=False),
)


class BlobStore(Protocol):
    def has_blob(self, kind: str, key: str) -> bool: ...

    def put_blob(self, kind: str, key: str, data: bytes) -> None:
        """Keep `data` under (kind, key) unless a blob is there already (then nothing changes)."""

    def get_blob(self, kind: str, key: str) -> bytes | None:
        """The blob's bytes (their sha256 checked), or None if there is none. PlatformError if
        the stored bytes do not match their sha256."""


def _checked(kind: str, key: str, sha: str, data: bytes) -> bytes:
    if hashlib.sha256(data).hexdigest() != sha:
        raise PlatformError(f"the stored {kind} blob {key[:12]} is damaged (its bytes do not match their sha256); "
                            "deploy the function again to store it anew")
    return data


class SqlBlobStore:
    """Blobs in the control database (PostgreSQL in cluster mode; SQLite works too)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def has_blob(self, kind: str, key: str) -> bool:
        q = sa.select(code_blobs.c.key).where(code_blobs.c.kind == kind, code_blobs.c.key == key)
        with self.engine.connect() as conn:
            return conn.execute(q).first() is not None

    def put_blob(self, kind: str, key: str, data: bytes) -> None:
        row = {"kind": kind, "key": key, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
               "data": data, "created_at": time.time()}
        try:
            with self.engine.begin() as conn:
                conn.execute(code_blobs.insert().values(**row))
        except IntegrityError:
            pass  # another process stored it first: same content

    def get_blob(self, kind: str, key: str) -> bytes | None:
        q = sa.select(code_blobs.c.sha256, code_blobs.c.data).where(code_blobs.c.kind == kind, code_blobs.c.key == key)
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return None if row is None else _checked(kind, key, row.sha256, bytes(row.data))


class MemoryBlobStore:
    """The in-memory fake (tests, and users of mist.testing)."""

    def __init__(self) -> None:
        self.blobs: dict[tuple[str, str], tuple[str, bytes]] = {}

    def has_blob(self, kind: str, key: str) -> bool:
        return (kind, key) in self.blobs

    def put_blob(self, kind: str, key: str, data: bytes) -> None:
        self.blobs.setdefault((kind, key), (hashlib.sha256(data).hexdigest(), bytes(data)))

    def get_blob(self, kind: str, key: str) -> bytes | None:
        found = self.blobs.get((kind, key))
        return None if found is None else _checked(kind, key, found[0], found[1])
