"""The object store's metadata: SQLAlchemy Core tables in their own MetaData, and the engine.

SQLite (`sqlite:///DATA/s3.db`, `mist up`) or PostgreSQL (cluster mode), optionally in a schema
of its own. Keys sort as S3 lists them, by UTF-8 bytes: SQLite's default BINARY collation does,
PostgreSQL needs COLLATE "C". Writes on SQLite take the write lock up front (BEGIN IMMEDIATE) so
concurrent writers queue on the busy timeout instead of failing on a lock upgrade, and every
commit is fsync'd (synchronous=FULL): an answered PUT is on disk, data and metadata.

    s3_buckets        name, owner, created_at
    s3_objects        (bucket, key) -> size, etag, content type, metadata, segments (blob ids)
    s3_uploads        multipart uploads in progress; s3_parts their parts (one blob each)
    s3_access_keys    access key id -> owner, sealed secret
    s3_outbox         one row per object event, written in the transaction that made it
    s3_pending_blobs  blob files whose fate is not settled: written but not committed yet, or
                      no longer referenced but not unlinked yet; removed on start (see blobs.py)
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError

R = TypeVar("R")
RETRIES = 5  # a write that lost a race on a new row (PostgreSQL) is run again, this often
metadata = sa.MetaData()

KEY = sa.Text().with_variant(postgresql.TEXT(collation="C"), "postgresql")
OWNER = sa.String(64)
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER keys only

buckets = sa.Table(
    "s3_buckets",
    metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("owner", OWNER, nullable=False, server_default="default"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_s3_buckets_owner", "owner"),
)

objects = sa.Table(
    "s3_objects",
    metadata,
    sa.Column("bucket", sa.String(63), primary_key=True),
    sa.Column("key", KEY, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("etag", sa.String(64), nullable=False),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("meta", sa.Text, nullable=False),  # JSON: {"user": {...}, "headers": {...}}
    sa.Column("segments", sa.Text, nullable=False),  # JSON: [[blob_id, size], ...]
    sa.Column("last_modified", sa.Float, nullable=False),
)

uploads = sa.Table(
    "s3_uploads",
    metadata,
    sa.Column("upload_id", sa.String(64), primary_key=True),
    sa.Column("bucket", sa.String(63), nullable=False),
    sa.Column("key", KEY, nullable=False),
    sa.Column("content_type", sa.Text, nullable=False),
    sa.Column("meta", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("ix_s3_uploads_bucket_key", "bucket", "key"),
)

parts = sa.Table(
    "s3_parts",
    metadata,
    sa.Column("upload_id", sa.String(64), primary_key=True),
    sa.Column("part_number", sa.Integer, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("etag", sa.String(64), nullable=False),
    sa.Column("blob_id", sa.String(32), nullable=False),
    sa.Column("last_modified", sa.Float, nullable=False),
)

access_keys = sa.Table(
    "s3_access_keys",
    metadata,
    sa.Column("access_key_id", sa.String(32), primary_key=True),
    sa.Column("owner", OWNER, nullable=False, server_default="default"),
    sa.Column("secret", sa.Text, nullable=False),  # sealed, see mist/sealing.py
    sa.Column("created_at", sa.Float, nullable=False),
)

outbox = sa.Table(
    "s3_outbox",
    metadata,
    sa.Column("id", ID, primary_key=True, autoincrement=True),
    sa.Column("bucket", sa.String(63), nullable=False),
    sa.Column("key", KEY, nullable=False),
    sa.Column("event_name", sa.String(64), nullable=False),
    sa.Column("size", sa.BigInteger),
    sa.Column("etag", sa.String(64)),
    sa.Column("principal", sa.String(64), nullable=False),
    sa.Column("source_ip", sa.String(64), nullable=False),
    sa.Column("request_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sqlite_autoincrement=True,  # ids are never reused once acked rows are gone: they name events
    # (S3's sequencer, the trigger manager's idempotency keys)
)

pending_blobs = sa.Table(
    "s3_pending_blobs",
    metadata,
    sa.Column("blob_id", sa.String(32), primary_key=True),
    sa.Column("created_at", sa.Float, nullable=False),
)


class _Work:
    """One caller's part of a group commit."""

    def __init__(self, work: Callable[[sa.Connection], Any]) -> None:
        self.work = work
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.result


class Database:
    """An engine with the tables created, `read()` and `write()` transactions, and `transact()`:
    writes of concurrent threads committed together."""

    def __init__(self, url: str, *, schema: str | None = None) -> None:
        self.sqlite = url.startswith("sqlite")
        kwargs: dict[str, object] = {}
        if self.sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30, "isolation_level": None}
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 20
        engine = sa.create_engine(url, **kwargs)
        if self.sqlite:

            @sa.event.listens_for(engine, "connect")
            def _pragmas(conn, _record):  # noqa: ANN001
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=FULL")  # an acknowledged PUT survives a power loss
                cur.close()

            @sa.event.listens_for(engine, "begin")
            def _begin(conn):  # noqa: ANN001
                immediate = conn.get_execution_options().get("s3_write", False)
                conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        if schema is not None:
            engine = engine.execution_options(schema_translate_map={None: schema})
        self.engine = engine
        self._queue: list[_Work] = []
        self._queue_lock = threading.Lock()
        self._commit_lock = threading.Lock()
        with engine.begin() as conn:
            if schema is not None:
                conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
            metadata.create_all(conn)

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[sa.Connection]:
        with self.engine.connect().execution_options(s3_write=True) as conn, conn.begin():
            yield conn

    def transact(self, work: Callable[[sa.Connection], R]) -> R:
        """`work(conn)` in a write transaction, committed together with the writes other threads
        are waiting to make (group commit): one commit, one fsync, for all of them. Each work runs
        in a savepoint of its own, so one that fails (or loses a race on a new row, and is run
        again) undoes only itself. Blocking; returns or raises what `work` did, once committed."""
        item = _Work(work)
        with self._queue_lock:
            self._queue.append(item)
        with self._commit_lock:  # the holder commits everything queued, this item too if still there
            if not item.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        return item.outcome()

    def _commit(self, batch: list[_Work]) -> None:
        try:
            with self.write() as conn:
                for item in batch:
                    for _ in range(RETRIES):
                        savepoint = conn.begin_nested()
                        try:
                            item.result, item.error = item.work(conn), None
                            savepoint.commit()
                            break
                        except IntegrityError as exc:  # a concurrent insert of the same new row won
                            savepoint.rollback()
                            item.error = exc
                        except BaseException as exc:  # noqa: BLE001 - handed to the item's caller
                            savepoint.rollback()
                            item.error = exc
                            break
        except BaseException as exc:  # noqa: BLE001 - the commit failed: nothing of the batch was written
            for item in batch:
                item.error = item.error or exc
        finally:
            for item in batch:
                item.done = True

    def close(self) -> None:
        self.engine.dispose()
