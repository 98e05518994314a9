"""The contract between an event source and the trigger manager: Connector and its value types.

A Connector reads one stream / subject / queue / topic of one broker and hands its messages, in
batches, to a `Deliver` callback (the trigger manager turns a batch into one invocation of the
function). It acknowledges a message to the broker only after `Deliver` succeeded for it, so a
message mist has read is delivered at least once whatever crashes:

    connector = connector_for(spec)                      # mist.triggers.connectors
    task = asyncio.create_task(connector.run(deliver, dead_letter))
    connector.status()                                   # for `mist trigger ls`
    task.cancel()                                        # stop; unacknowledged messages come again

Contract of `run(deliver, dead_letter)` (every connector passes tests/triggers/test_contract.py):

- runs until cancelled; never raises for broker trouble: it reconnects with backoff
  (mist.core.retry.backoff_s) and reports state "reconnecting" and the error in status();
- calls `deliver(batch)` with 1..batch_size messages, in broker order for one consumer, each id
  unique within the batch; several consumers may call it concurrently (scaled with the backlog);
- `deliver` returns the ids that FAILED (empty: all succeeded; a dict id -> error text is also
  accepted); raising means the whole batch failed, the exception's text being the error;
- a failed message is redelivered after a backoff delay with delivery_count + 1; on its last
  attempt (delivery_count >= max_attempts) `dead_letter(message, error)` is awaited and then the
  message is acknowledged; if dead_letter raises, the message is handed back instead;
- when cancelled mid-batch, nothing of that batch is acknowledged: it comes again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from mist.triggers.connectors.spec import ConnectorSpec


@dataclass(frozen=True, slots=True)
class Message:
    """One message read from a broker."""

    id: str  # stable across redeliveries where the broker allows (see docs/triggers.md)
    body: bytes
    attributes: dict[str, str]  # what the broker says about it: subject, topic, SentTimestamp...
    source: str  # the source's URI without credentials (eventSourceArn)
    delivery_count: int  # 1 on the first delivery
    received_at: float  # unix seconds, when this connector read it
    headers: dict[str, str] = field(default_factory=dict)  # the publisher's: fields, headers, properties
    handle: Any = field(default=None, compare=False, repr=False)  # opaque, for the connector that made it


Failed = Collection[str] | Mapping[str, str]
Deliver = Callable[[list[Message]], Awaitable[Failed]]
DeadLetter = Callable[[Message, str], Awaitable[None]]


class ConnectorState(StrEnum):
    CONNECTING = "connecting"  # first connection attempt under way
    CONNECTED = "connected"  # consuming
    RECONNECTING = "reconnecting"  # the broker failed; waiting to retry (last_error says why)
    STOPPED = "stopped"  # run() has returned


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
    state: ConnectorState
    last_error: str | None  # the last broker error (kept after recovery, for `mist trigger ls`)
    since: float  # unix seconds when `state` was entered
    backlog: int | None  # messages waiting at the broker at the last look (None: unknown)
    consumers: int  # consumers running now
    delivered: int  # messages acknowledged after the function succeeded
    failed: int  # failed attempts (each will be retried or dead-lettered)
    dead_lettered: int


@runtime_checkable
class Connector(Protocol):
    spec: ConnectorSpec

    async def run(self, deliver: Deliver, dead_letter: DeadLetter) -> None:
        """Consume until cancelled (see the module docstring for the contract)."""
        ...

    def status(self) -> ConnectorStatus: ...

    async def backlog(self) -> int | None:
        """Messages waiting at the broker now, or None if unknown (not connected)."""
        ...
