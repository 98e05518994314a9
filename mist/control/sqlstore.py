"""SqlStore: every store of mist/control/store.py over SQLAlchemy Core (SQLite or PostgreSQL).

The functions and records are here; the event queue and mist queues in sqlevents.py; the usage
ledger in mist/metering/sqlusage.py; the tables in sqlschema.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from mist.control.sqlbatch import insert_rows
from mist.control.sqlevents import SqlEvents
from mist.control.sqlschema import functions, invocations, log_lines, metadata, versions
from mist.control.store import NewVersion
from mist.metering.sqlusage import SqlUsage
from mist.models import FunctionSummary, FunctionVersion, InvocationRecord, LogRecord


def _utc(dt: datetime) -> datetime:
    # SQLite hands datetimes back naive; they were stored as UTC.
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _sqlite_engine(url: str, *, synchronous: str, immediate: bool) -> sa.Engine:
    """An SQLite engine in WAL mode. `immediate`: every transaction takes the write lock at BEGIN
    (SQLAlchemy's recipe for pysqlite), so a read-then-write transaction cannot fail half-way."""
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(conn, _record):  # noqa: ANN001
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()
        if immediate:
            conn.isolation_level = None  # pysqlite: no implicit BEGIN; the "begin" hook issues it

    if immediate:

        @sa.event.listens_for(engine, "begin")
        def _begin(conn):  # noqa: ANN001
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


SCHEMA_LOCK = 0x6D697374  # "mist": the advisory lock every start takes while it creates or upgrades tables


@contextmanager
def schema_transaction(engine: sa.Engine) -> Iterator[sa.Connection]:
    """A transaction to create or upgrade tables in. On PostgreSQL it first takes the advisory
    lock SCHEMA_LOCK (released at commit), so processes starting at once against one database
    create each table once instead of failing on each other's CREATE TABLE."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
        yield conn


class SqlStore(SqlEvents, SqlUsage):
    """Every store over SQLAlchemy. `url` e.g. sqlite:////path/mist.db or
    postgresql+psycopg://user@host/db."""

    def __init__(self, url: str) -> None:
        if url.startswith("sqlite"):
            self.engine = _sqlite_engine(url, synchronous="NORMAL", immediate=False)
            self.writes = _sqlite_engine(url, synchronous="NORMAL", immediate=True)
            self.durable_writes = _sqlite_engine(url, synchronous="FULL", immediate=True)
        else:  # PostgreSQL: a start that cannot connect fails within seconds (mist/control/state.py)
            self.engine = self.writes = self.durable_writes = sa.create_engine(url, connect_args={"connect_timeout": 5})
        with schema_transaction(self.engine) as conn:
            metadata.create_all(conn)
            self._add_missing_columns(conn)

    def _add_missing_columns(self, conn: sa.Connection) -> None:
        """Columns added since a data dir was created are added to it (nullable or defaulted
        columns only), so an upgrade keeps every function and record."""
        inspector = sa.inspect(conn)
        for table in metadata.sorted_tables:
            have = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in have:
                    continue
                ddl = f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column.type.compile(self.engine.dialect)}"
                if column.server_default is not None:
                    ddl += f" NOT NULL DEFAULT {column.server_default.arg}"
                conn.exec_driver_sql(ddl)

    def close(self) -> None:
        for engine in {self.engine, self.writes, self.durable_writes}:
            engine.dispose()

    # -- FunctionStore ---------------------------------------------------------------------

    def create_version(self, new: NewVersion, now: datetime) -> FunctionVersion:
        for _ in range(50):
            try:
                with self.engine.begin() as conn:
                    return self._create_version(conn, new, now)
            except IntegrityError:
                continue  # a concurrent deploy took this number; take the next one
        raise RuntimeError(f"could not allocate a version number for {new.name} after 50 tries")

    def _create_version(self, conn: sa.Connection, new: NewVersion, now: datetime) -> FunctionVersion:
        current = conn.execute(
            sa.select(sa.func.max(versions.c.version)).where(versions.c.name == new.name)
        ).scalar()
        number = (current or 0) + 1
        conn.execute(
            versions.insert().values(
                name=new.name,
                version=number,
                handler=new.handler,
                memory_mb=new.memory_mb,
                timeout_s=new.timeout_s,
                concurrency=new.concurrency,
                env=json.dumps(new.env, sort_keys=True),
                code_sha256=new.code_sha256,
                code_size=new.code_size,
                layer_sha256=new.layer_sha256,
                created_at=now,
                min_instances=new.min_instances,
                max_instances=new.max_instances,
                retries=new.retries,
                max_event_age_s=new.max_event_age_s,
                on_success=new.on_success,
                on_failure=new.on_failure,
                http_auth=new.http_auth,
                network=json.dumps(list(new.network)) if new.network else None,
                reserved_concurrency=new.reserved_concurrency,
                rate_per_s=new.rate_per_s,
                burst=new.burst,
                max_queued=new.max_queued,
            )
        )
        updated = conn.execute(
            functions.update()
            .where(functions.c.name == new.name, functions.c.latest_version < number)
            .values(latest_version=number, updated_at=now)
        ).rowcount
        if not updated:
            exists = conn.execute(sa.select(functions.c.name).where(functions.c.name == new.name)).first()
            if not exists:
                conn.execute(
                    functions.insert().values(name=new.name, created_at=now, updated_at=now, latest_version=number)
                )
        return new.numbered(number, now)

    @staticmethod
    def _version(row: sa.Row) -> FunctionVersion:
        return FunctionVersion(
            name=row.name,
            version=row.version,
            handler=row.handler,
            memory_mb=row.memory_mb,
            timeout_s=row.timeout_s,
            concurrency=row.concurrency,
            env=json.loads(row.env),
            code_sha256=row.code_sha256,
            code_size=row.code_size,
            layer_sha256=row.layer_sha256,
            created_at=_utc(row.created_at),
            min_instances=row.min_instances,
            max_instances=row.max_instances,
            retries=row.retries,
            max_event_age_s=row.max_event_age_s,
            on_success=row.on_success,
            on_failure=row.on_failure,
            http_auth=row.http_auth,
            network=tuple(json.loads(row.network)) if row.network else (),
            reserved_concurrency=row.reserved_concurrency,
            rate_per_s=row.rate_per_s,
            burst=row.burst,
            max_queued=row.max_queued,
        )

    def _summaries(self, where: sa.ColumnElement[bool] | None) -> list[FunctionSummary]:
        q = (
            sa.select(functions.c.created_at.label("f_created"), functions.c.updated_at, versions)
            .join(
                versions,
                sa.and_(versions.c.name == functions.c.name, versions.c.version == functions.c.latest_version),
            )
            .order_by(functions.c.name)
        )
        if where is not None:
            q = q.where(where)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [
            FunctionSummary(
                name=r.name, created_at=_utc(r.f_created), updated_at=_utc(r.updated_at), latest=self._version(r)
            )
            for r in rows
        ]

    def get_function(self, name: str) -> FunctionSummary | None:
        found = self._summaries(functions.c.name == name)
        return found[0] if found else None

    def list_functions(self) -> list[FunctionSummary]:
        return self._summaries(None)

    def get_versions(self, name: str, version: int | None = None) -> list[FunctionVersion]:
        q = sa.select(versions).where(versions.c.name == name).order_by(versions.c.version.desc())
        if version is not None:
            q = q.where(versions.c.version == version)
        with self.engine.connect() as conn:
            return [self._version(r) for r in conn.execute(q).all()]

    def delete_function(self, name: str) -> bool:
        with self.engine.begin() as conn:
            gone = conn.execute(functions.delete().where(functions.c.name == name)).rowcount
            conn.execute(versions.delete().where(versions.c.name == name))
        return bool(gone)

    def code_in_use(self) -> set[str]:
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(sa.select(versions.c.code_sha256).distinct())}

    # -- RecordStore -----------------------------------------------------------------------

    def add_invocations(self, batch: list[tuple[InvocationRecord, list[LogRecord]]]) -> None:
        if not batch:
            return
        rows = [
            (r.id, r.function, r.version, r.trigger, r.status, r.error_type, r.error_message, r.cold_start,
             r.init_ms, r.duration_ms, r.billed_ms, r.memory_mb, r.max_memory_used_mb, r.started_at, r.ended_at)
            for r, _ in batch
        ]  # fmt: skip
        lines = [
            (l.invocation_id, seq, l.function, l.version, l.ts, l.stream, l.text)
            for _, logs in batch
            for seq, l in enumerate(logs)
        ]
        with self.engine.begin() as conn:  # a few statements per batch, not one per row (mist/control/sqlbatch.py)
            insert_rows(conn, invocations.name, _RECORD_COLUMNS, rows)
            if lines:
                insert_rows(conn, log_lines.name, _LINE_COLUMNS, lines)

    def get_invocation(self, invocation_id: str) -> tuple[InvocationRecord, list[LogRecord]] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(invocations).where(invocations.c.id == invocation_id)).first()
            if row is None:
                return None
            logs = conn.execute(
                sa.select(log_lines).where(log_lines.c.invocation_id == invocation_id).order_by(log_lines.c.id)
            ).all()
        return _record(row), [_log(l) for l in logs]

    def list_invocations(self, function: str, limit: int) -> list[InvocationRecord]:
        q = (
            sa.select(invocations)
            .where(invocations.c.function == function)
            .order_by(invocations.c.started_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(q).all()]

    def list_logs(self, function: str, *, invocation_id: str | None = None, limit: int = 200) -> list[LogRecord]:
        q = sa.select(log_lines).where(log_lines.c.function == function)
        if invocation_id is not None:
            q = q.where(log_lines.c.invocation_id == invocation_id)
        q = q.order_by(log_lines.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(q).all()
        return [_log(r) for r in reversed(rows)]


_RECORD_COLUMNS = (
    "id", "function", "version", "trigger", "status", "error_type", "error_message", "cold_start", "init_ms",
    "duration_ms", "billed_ms", "memory_mb", "max_memory_used_mb", "started_at", "ended_at",
)  # fmt: skip
_LINE_COLUMNS = ("invocation_id", "seq", "function", "version", "ts", "stream", "text")


def _record(r: sa.Row) -> InvocationRecord:
    return InvocationRecord(
        id=r.id,
        function=r.function,
        version=r.version,
        trigger=r.trigger,
        status=r.status,
        error_type=r.error_type,
        error_message=r.error_message,
        cold_start=bool(r.cold_start),
        init_ms=r.init_ms,
        duration_ms=r.duration_ms,
        billed_ms=r.billed_ms,
        memory_mb=r.memory_mb,
        max_memory_used_mb=r.max_memory_used_mb,
        started_at=r.started_at,
        ended_at=r.ended_at,
    )


def _log(r: sa.Row) -> LogRecord:
    return LogRecord(
        invocation_id=r.invocation_id, function=r.function, version=r.version, ts=r.ts, stream=r.stream, text=r.text
    )
