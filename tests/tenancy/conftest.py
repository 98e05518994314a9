"""`tenant_store`: each contract test runs against SQLite, PostgreSQL (a schema of its own) and the fake."""

import pytest

from mist.control.sqlschema import metadata
from mist.control.sqlstore import SqlStore
from mist.tenancy.store import SqlTenantStore
from mist.testing.tenancy import MemoryTenantStore


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def tenant_store(request, tmp_path):
    if request.param == "memory":
        yield MemoryTenantStore()
        return
    if request.param == "postgresql":
        s = SqlStore(request.getfixturevalue("pg_url"))
        with s.engine.begin() as conn:
            conn.exec_driver_sql(f"TRUNCATE {', '.join(t.name for t in metadata.sorted_tables)}")
    else:
        s = SqlStore(f"sqlite:///{tmp_path / 'mist.db'}")
    yield SqlTenantStore(s.writes)
    s.close()
