"""The `store` fixture: each store contract test runs against SQLite, PostgreSQL and the fake.

PostgreSQL is the real server (postgresql+psycopg://postgres@127.0.0.1/test): the session gets
a schema of its own, emptied before each test and dropped at the end.
"""

import pytest

from mist.control.sqlschema import metadata
from mist.control.sqlstore import SqlStore
from mist.testing.stores import MemoryStore


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore()
        return
    if request.param == "postgresql":
        s = SqlStore(request.getfixturevalue("pg_url"))
        with s.engine.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {', '.join(t.name for t in metadata.sorted_tables)}")
    else:
        s = SqlStore(f"sqlite:///{tmp_path / 'mist.db'}")
    yield s
    s.close()
