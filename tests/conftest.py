"""Fixtures shared by every test directory."""

import contextlib
import os
import secrets

import pytest
import sqlalchemy as sa

PG_URL = "postgresql+psycopg://postgres@127.0.0.1/test"


@contextlib.contextmanager
def pg_schema(prefix: str):
    """The URL of a new schema of the real PostgreSQL server (its search_path), dropped after."""
    schema = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        admin.dispose()


@pytest.fixture(scope="session")
def pg_url():
    """The real PostgreSQL server, in a schema of this session's own, dropped at the end."""
    with pg_schema("mist_test") as url:
        yield url


@pytest.fixture
def fresh_pg_url():
    """An empty schema of this test's own (whatever the code under test creates in it), dropped after."""
    with pg_schema("mist_fresh") as url:
        yield url


@contextlib.contextmanager
def control_database(request, tmp_path, kind: str):
    """A SqlStore on an empty control database: SQLite in tmp_path, or the session's PostgreSQL
    schema (emptied) — for store contract tests parametrized over ["sqlite", "postgresql", ...]."""
    from mist.control.sqlschema import metadata
    from mist.control.sqlstore import SqlStore

    if kind == "postgresql":
        s = SqlStore(request.getfixturevalue("pg_url"))
        with s.engine.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {', '.join(t.name for t in metadata.sorted_tables)}")
    else:
        s = SqlStore(f"sqlite:///{tmp_path / 'mist.db'}")
    try:
        yield s
    finally:
        s.close()
