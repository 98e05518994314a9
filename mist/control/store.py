"""What the control plane needs from its database, as two small Protocols.

`FunctionStore` keeps functions and their immutable versions; `RecordStore` keeps invocation
records and their log lines. Both are synchronous (callers on the event loop use a thread);
`mist.control.sqlstore.SqlStore` implements both over SQLAlchemy (SQLite by default,
PostgreSQL in cluster mode) and `mist.testing.stores.MemoryStore` is the in-memory fake. The
same contract tests (tests/control/test_store_contract.py) run against each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from mist.models import FunctionSummary, FunctionVersion, InvocationRecord, LogRecord


@dataclass(frozen=True)
class NewVersion:
    """A version about to be created; the store assigns its number."""

    name: str
    handler: str
    memory_mb: int
    timeout_s: float
    concurrency: int
    env: dict[str, str]
    code_sha256: str
    code_size: int
    layer_sha256: str | None
    min_instances: int = 0
    max_instances: int | None = None


class FunctionStore(Protocol):
    def create_version(self, new: NewVersion, now: datetime) -> FunctionVersion:
        """Create the function if absent and append a version numbered max+1.

        Concurrent calls for one name each get their own number; none is lost.
        """

    def get_function(self, name: str) -> FunctionSummary | None: ...

    def list_functions(self) -> list[FunctionSummary]: ...

    def get_versions(self, name: str, version: int | None = None) -> list[FunctionVersion]:
        """All versions of `name`, newest first; or just `version` (empty list if absent)."""

    def delete_function(self, name: str) -> bool:
        """Forget the function and its versions; records stay. False if it did not exist."""

    def code_in_use(self) -> set[str]:
        """The code_sha256 of every version still stored (what code may not be deleted)."""


class RecordStore(Protocol):
    def add_invocations(self, batch: list[tuple[InvocationRecord, list[LogRecord]]]) -> None:
        """Store records and their logs. Idempotent by record id (a repeat is ignored)."""

    def get_invocation(self, invocation_id: str) -> tuple[InvocationRecord, list[LogRecord]] | None: ...

    def list_invocations(self, function: str, limit: int) -> list[InvocationRecord]:
        """Newest first."""

    def list_logs(
        self, function: str, *, invocation_id: str | None = None, limit: int = 200
    ) -> list[LogRecord]:
        """The newest `limit` lines, returned oldest first."""
