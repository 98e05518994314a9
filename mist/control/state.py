"""Where the platform's state lives: SQLite in the data dir (one `mist up`, the default), or one
PostgreSQL database shared by every `mist up --db URL` of a cluster (docs/cluster.md).

    state = open_state(data_dir, db_url)   # StateError: a bad URL, or PostgreSQL unreachable
    state.store     SqlStore: functions, versions, records, log lines, events, queues, usage;
                    tenants/keys, secrets, triggers and audit use state.store.writes
    state.shared    True with --db: other processes share this state
    state.blobs     code archives and dependency layers (shared only; None on SQLite)
    state.changes   the ChangeFeed telling this process what others changed (shared only)

With --db every table is created (or upgraded) in one transaction holding a PostgreSQL advisory
lock, so processes starting at once against an empty database do not race on CREATE TABLE.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa

from mist.cluster.pg import reachable
from mist.control import blobs, changes
from mist.control.blobs import SqlBlobStore
from mist.control.changes import ChangeFeed
from mist.control.sqlstore import SqlStore, schema_transaction
from mist.errors import CoordinationUnavailable, MistError

ENV_DB_URL = "MIST_DB_URL"
BOOTSTRAP_LOCK = 0x6D697375  # held while a start checks for and makes the cluster's first admin key


class StateError(MistError):
    code = "StateError"


def redact(url: str) -> str:
    """The URL without its password (safe to print)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


def check_db_url(url: str) -> str:
    """`url` if it names PostgreSQL; StateError saying what to give otherwise."""
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]  # the driver mist ships with
    if scheme.startswith("postgresql+"):
        return url
    raise StateError(
        f"--db must be a PostgreSQL URL such as postgresql+psycopg://USER@HOST:5432/DB, got {redact(url)!r}; "
        "a single mist up needs no --db (it keeps SQLite in --data-dir)"
    )


@dataclass
class State:
    store: SqlStore
    url: str
    shared: bool
    blobs: SqlBlobStore | None = None
    changes: ChangeFeed | None = None

    @contextmanager
    def exclusive(self, lock: int) -> Iterator[None]:
        """Hold a cluster-wide PostgreSQL advisory lock (session level) for the block; on
        SQLite the data dir lock already makes this process the only one."""
        if not self.shared:
            yield
            return
        with self.store.engine.connect() as conn:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({lock})")
            conn.commit()
            try:
                yield
            finally:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({lock})")
                conn.commit()

    def close(self) -> None:
        self.store.close()


def open_state(data_dir: Path, db_url: str | None, *, poll_s: float = 1.0) -> State:
    if db_url is None:
        return State(SqlStore(f"sqlite:///{data_dir / 'mist.db'}"), f"sqlite:///{data_dir / 'mist.db'}", False)
    url = check_db_url(db_url)
    what = f"the state database {redact(url)}"
    try:
        with reachable(what):
            store = SqlStore(url)
            try:
                _create_shared(store.engine)
            except BaseException:
                store.close()
                raise
    except CoordinationUnavailable as exc:
        raise StateError(exc.message.replace("then retry", "then start mist again")) from None
    feed = ChangeFeed(store.engine, poll_s=poll_s)
    feed.mark()  # before any component loads what it holds: a change made meanwhile is followed
    return State(store, url, True, SqlBlobStore(store.writes), feed)


def _create_shared(engine: sa.Engine) -> None:
    from mist.control.triggers import create_tables as create_trigger_tables

    with schema_transaction(engine) as conn:
        version = conn.dialect.server_version_info or (0,)
        if version < (14,):
            raise StateError(f"--db needs PostgreSQL 14 or newer (CREATE OR REPLACE TRIGGER); this server is "
                             f"{'.'.join(map(str, version))}")
        blobs.metadata.create_all(conn)
        create_trigger_tables(conn)
        changes.install(conn)
