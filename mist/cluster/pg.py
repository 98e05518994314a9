"""The PostgreSQL connection the cluster stores share: one autocommit engine per URL, its tables
created on first use (columns added since, added: `schema.UPGRADES`), and PostgreSQL's failures mapped to CoordinationUnavailable at this edge.

Autocommit: every store operation is a single statement (an INSERT/UPDATE ... RETURNING), so each
costs one round trip instead of three (BEGIN, statement, COMMIT), and `now()` is the
statement's own time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.exc import InterfaceError, OperationalError

from mist.cluster.schema import UPGRADES, metadata
from mist.control.sqlstore import SCHEMA_LOCK
from mist.errors import CoordinationUnavailable


def connect(url: str, *, timeout_s: float = 5.0) -> sa.Engine:
    """An autocommit engine for `url` (postgresql+psycopg://...) with the cluster tables.

    `timeout_s` bounds connecting and waiting for the server to acknowledge what was sent
    (libpq's connect_timeout and tcp_user_timeout): a holder cut off from the database learns it
    within that time instead of when TCP gives up, minutes later.
    """
    if not url.startswith("postgresql"):
        raise ValueError(f"cluster coordination needs PostgreSQL, got {url.split(':', 1)[0]!r} (postgresql+psycopg://...)")
    engine = sa.create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": max(1, round(timeout_s)), "tcp_user_timeout": int(timeout_s * 1000)},
    )
    with reachable(), engine.connect() as conn:
        # in a real transaction (the engine autocommits), under the schema lock: processes
        # started at once against an empty database each create every table once instead of
        # failing on each other's CREATE TABLE (DuplicateTable)
        conn = conn.execution_options(isolation_level="READ COMMITTED")
        with conn.begin():
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            metadata.create_all(conn)
            for ddl in UPGRADES:
                conn.exec_driver_sql(ddl)
    return engine


@contextmanager
def reachable(what: str = "the coordination database") -> Iterator[None]:
    """Turn a lost or refused connection into CoordinationUnavailable (whether the statement
    took effect is unknown to the caller). Errors in mist's own SQL are not masked. `what`
    names the database in the message."""
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        raise unavailable(exc, what) from exc


def unavailable(exc: OperationalError | InterfaceError, what: str = "the coordination database") -> CoordinationUnavailable:
    """The CoordinationUnavailable a lost or refused PostgreSQL connection means, naming `what`."""
    return CoordinationUnavailable(
        f"{what} could not be reached or failed ({type(exc.orig).__name__}: "
        f"{str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else 'no detail'}); "
        "check that PostgreSQL is up and reachable, then retry"
    )


def lost_postgresql(exc: BaseException) -> bool:
    """Whether `exc` is PostgreSQL unreachable or its connection lost (not an SQL error, not SQLite)."""
    return isinstance(exc, (OperationalError, InterfaceError)) and type(exc.orig).__module__.startswith("psycopg")
