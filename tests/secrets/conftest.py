"""`secret_store`: each contract test runs against SQLite, PostgreSQL (a schema of its own) and the fake."""

import pytest

from mist.secrets.store import SqlSecretStore
from mist.testing.secrets import MemorySecretStore
from tests.conftest import control_database


@pytest.fixture(params=["sqlite", "postgresql", "memory"])
def secret_store(request, tmp_path):
    if request.param == "memory":
        yield MemorySecretStore()
        return
    with control_database(request, tmp_path, request.param) as s:
        yield SqlSecretStore(s.writes)
