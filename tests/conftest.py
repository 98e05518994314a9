"""Fixtures shared by every test directory."""

import os
import secrets

import pytest
import sqlalchemy as sa

PG_URL = "postgresql+psycopg://postgres@127.0.0.1/test"


@pytest.fixture(scope="session")
def pg_url():
    """The real PostgreSQL server, in a schema of this session's own, dropped at the end."""
    schema = f"mist_test_{os.getpid()}_{secrets.token_hex(4)}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    admin.dispose()
