"""What the control plane needs from its database, as small Protocols.

`FunctionStore` keeps functions and their immutable versions; `RecordStore` keeps invocation
records and their log lines; `EventQueue` and `EventIndex` keep asynchronous invocations (the
durable event queue, see docs/events.md) and `MessageQueues` the mist queues (destinations and
dead-letter queues). All are synchronous (callers on the event loop use a thread);
`mist.control.sqlstore.SqlStore` implements them over SQLAlchemy (SQLite by default,
PostgreSQL in cluster mode) and `mist.testing.stores.MemoryStore` is the in-memory fake. The
same contract tests (tests/control/test_store_contract.py) run against each, PostgreSQL included.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Protocol

from mist.metering.usage import UsageRecord
from mist.models import (
    FunctionSummary,
    FunctionVersion,
    InvocationRecord,
    LogRecord,
    epoch,
    iso,
    split_id,
)


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
    retries: int = 2
    max_event_age_s: int = 21_600
    on_success: str | None = None
    on_failure: str | None = None
    http_auth: str = "public"
    network: tuple[str, ...] = ()  # () = none; else the egress allowlist
    reserved_concurrency: int | None = None
    rate_per_s: float | None = None
    burst: int | None = None
    max_queued: int | None = None

    def numbered(self, version: int, created_at: datetime) -> FunctionVersion:
        """The version this becomes once the store has given it its number."""
        given = {f.name: getattr(self, f.name) for f in fields(self)}
        given.update(env=dict(self.env), network=tuple(self.network))
        return FunctionVersion(version=version, created_at=created_at, **given)


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


# -- asynchronous invocations ----------------------------------------------------------------

EVENT_STATUSES = ("queued", "running", "succeeded", "failed", "dead-lettered")
IDEMPOTENCY_TTL_S = 24 * 3600.0
# how an attempt whose dispatcher went away is closed when its event is claimed again
LOST_ERROR_TYPE = "Mist.AttemptLost"
LOST_ERROR_MESSAGE = (
    "this attempt was interrupted or never started: its dispatcher stopped (restart or crash) "
    "or lost its lease; the event was run again"
)


@dataclass(frozen=True)
class NewEvent:
    """An asynchronous invocation about to be stored."""

    id: str
    function: str
    version: int | None  # None: the newest version when each attempt runs
    payload: bytes
    trigger: str  # "event" (the API), "destination", "redrive", "s3", "cron", ...
    idempotency_key: str | None = None
    source_event_id: str | None = None


@dataclass(frozen=True)
class Enqueued:
    invocation_id: str
    created: bool  # False: the idempotency key was used within 24 h; this is the first one's id


@dataclass(frozen=True)
class ClaimedEvent:
    """An event leased to one dispatcher for one attempt (number `attempt`, counting from 1)."""

    id: str
    function: str
    version: int | None
    payload: bytes
    trigger: str
    created_at: float
    attempt: int
    function_errors: int  # attempts so far that ended in a function error


@dataclass(frozen=True)
class Message:
    """A message for a mist queue (a destination record, a dead-lettered event)."""

    queue: str
    body: bytes


@dataclass(frozen=True)
class Settlement:
    """The end of one attempt and what becomes of the event (decided by asyncpolicy.decide).

    Applied only if `owner` still holds the event's lease for this attempt; then, in the same
    transaction, the attempt is recorded, the event takes `status` (and `due_at` if it is to be
    retried), `messages` and `events` (destinations) are stored, and so is the attempt's
    `usage` (if it ran): an attempt is billed exactly when its outcome is recorded.
    """

    event_id: str
    owner: str
    attempt: int
    started_at: float
    ended_at: float
    # the attempt: "succeeded" | "failed" (function error) | "error" (platform error) |
    # "missing" (the function is gone) | "expired" (not run: older than max_event_age_s)
    outcome: str
    error_type: str | None
    error_message: str | None
    record_id: str | None  # the attempt's InvocationRecord (logs, timing)
    version: int | None  # the version that ran
    status: str  # the event: "queued" (to retry) | "succeeded" | "failed" | "dead-lettered"
    due_at: float | None  # when to retry (status "queued")
    function_errors: int
    condition: str | None = None  # the destination record's: Success | RetriesExhausted | EventAgeExceeded
    destination: str | None = None  # where the record went: "function:x", "queue:y", "dlq"
    messages: tuple[Message, ...] = ()
    events: tuple[NewEvent, ...] = ()
    usage: UsageRecord | None = None  # the attempt's, when it ran (docs/billing.md)


@dataclass(frozen=True)
class AttemptView:
    attempt: int
    started_at: float
    ended_at: float | None
    outcome: str | None  # a Settlement's, or None: running, or "lost": its dispatcher went away
    error_type: str | None
    error_message: str | None
    version: int | None
    record_id: str | None


@dataclass(frozen=True)
class EventView:
    id: str
    function: str
    version: int | None
    trigger: str
    status: str
    created_at: float
    due_at: float | None
    function_errors: int
    condition: str | None
    destination: str | None
    idempotency_key: str | None
    source_event_id: str | None
    attempts: tuple[AttemptView, ...]

    def to_json(self) -> dict[str, Any]:
        tenant, name = split_id(self.function)
        return {
            "id": self.id,
            "invocation_type": "Event",
            "function": name,
            "tenant": tenant,
            "version": self.version,
            "trigger": self.trigger,
            "status": self.status,
            "created_at": _ts(self.created_at),
            "next_attempt_at": _ts(self.due_at) if self.status == "queued" else None,
            "function_errors": self.function_errors,
            "condition": self.condition,
            "destination": self.destination,
            "idempotency_key": self.idempotency_key,
            "source_event_id": self.source_event_id,
            "attempts": [
                {
                    "attempt": a.attempt,
                    "started_at": _ts(a.started_at),
                    "ended_at": _ts(a.ended_at),
                    "outcome": a.outcome or "running",
                    "error_type": a.error_type,
                    "error_message": a.error_message,
                    "version": a.version,
                    "record_id": a.record_id,
                }
                for a in self.attempts
            ],
        }


@dataclass(frozen=True)
class QueueMessage:
    id: str
    queue: str
    body: bytes
    sent_at: float
    receive_count: int


@dataclass(frozen=True)
class QueueSummary:
    name: str
    messages: int
    visible: int  # not hidden by a receive's visibility timeout


class EventQueue(Protocol):
    """The write side of the durable event queue. Every method is one transaction."""

    def enqueue(self, events: Sequence[NewEvent], now: float) -> list[Enqueued]:
        """Store the events, in order. An event whose (function, idempotency_key) was stored
        within IDEMPOTENCY_TTL_S is not stored again; its result is the first event's id."""

    def claim(self, owner: str, function: str, now: float, *, limit: int, lease_s: float) -> list[ClaimedEvent]:
        """Lease up to `limit` due events of `function` (earliest due first; returned oldest
        first) to `owner` until
        now + lease_s and open an attempt for each. Due: queued with due_at <= now, or running
        with an expired lease (that attempt is closed as "lost"). Never the same event to two
        owners at once (FOR UPDATE SKIP LOCKED on PostgreSQL; one writer at a time on SQLite)."""

    def renew(self, owner: str, ids: Sequence[str], until: float) -> int:
        """Extend the leases `owner` holds on these events to `until`; the number extended."""

    def settle(self, settlements: Sequence[Settlement], now: float) -> list[bool]:
        """Apply each settlement whose lease is still held; False for the others."""

    def release(self, now: float, owner: str | None = None) -> int:
        """Make the running events of `owner` (None: of every owner; only when no other
        dispatcher can be running) due now. The number of events."""

    def purge(self, now: float) -> int:
        """Forget idempotency keys older than IDEMPOTENCY_TTL_S; the number forgotten."""


class EventIndex(Protocol):
    def pending(self) -> dict[str, float]:
        """Each function with unfinished events, and its earliest due_at (a lease's end for a
        running event)."""

    def get_event(self, event_id: str) -> EventView | None: ...


class MessageQueues(Protocol):
    def send(self, queue: str, bodies: Sequence[bytes], now: float) -> list[str]:
        """Append messages to `queue` (made by its first message); their ids, in order."""

    def list_queues(self, now: float) -> list[QueueSummary]:
        """Every queue that holds messages (dead-letter queues too), by name."""

    def peek(self, queue: str, *, limit: int, message_id: str | None = None) -> list[QueueMessage]:
        """Messages oldest first, without receiving them; or just `message_id`."""

    def receive(self, queue: str, now: float, *, limit: int, visibility_s: float) -> list[QueueMessage]:
        """Up to `limit` visible messages, oldest first, each hidden until now + visibility_s
        (then it is received again unless deleted: at-least-once)."""

    def delete(self, queue: str, ids: Sequence[str]) -> int:
        """Delete these messages; the number deleted."""

    def redrive(self, queue: str, moves: Sequence[tuple[str, NewEvent]], now: float) -> list[str | None]:
        """For each (message id, event): delete the message and store the event, atomically;
        the event's id, or None if the message was gone already."""


def _ts(value: float | None) -> str | None:
    return None if value is None else iso(epoch(value))
