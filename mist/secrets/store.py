"""Where secrets live, sealed: a Protocol, its SQL implementation (the control database:
SQLite, or PostgreSQL in cluster mode), and the in-memory fake `mist.testing.secrets.
MemorySecretStore`. Both pass tests/secrets/test_store_contract.py. A store never sees a value
in the clear.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import sqlalchemy as sa

from mist.control.sqlschema import function_secrets
from mist.secrets.model import StoredSecret


class SecretStore(Protocol):
    def change_secrets(self, function: str, sealed: Mapping[str, str], removed: Sequence[str], now: float) -> None:
        """In one transaction: set each name of `sealed` (replacing its value, `updated_at` =
        now) and delete the names in `removed`."""

    def list_secrets(self, function: str | None = None) -> list[StoredSecret]:
        """The secrets of `function` (of every function when None), by function then name (in
        code point order, whatever the database's collation)."""

    def delete_secrets(self, function: str) -> int:
        """Forget every secret of `function` (it was deleted); how many there were."""


class SqlSecretStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def change_secrets(self, function: str, sealed: Mapping[str, str], removed: Sequence[str], now: float) -> None:
        t = function_secrets
        gone = [*sealed, *removed]
        with self.engine.begin() as conn:
            if gone:
                conn.execute(t.delete().where(t.c.function == function, t.c.name.in_(gone)))
            if sealed:
                conn.execute(t.insert(), [{"function": function, "name": name, "sealed": value, "updated_at": now}
                                          for name, value in sealed.items()])

    def list_secrets(self, function: str | None = None) -> list[StoredSecret]:
        t = function_secrets
        query = sa.select(t)
        if function is not None:
            query = query.where(t.c.function == function)
        with self.engine.connect() as conn:
            rows = [StoredSecret(r.function, r.name, r.sealed, r.updated_at) for r in conn.execute(query)]
        return sorted(rows, key=lambda r: (r.function, r.name))

    def delete_secrets(self, function: str) -> int:
        with self.engine.begin() as conn:
            return conn.execute(function_secrets.delete().where(function_secrets.c.function == function)).rowcount
