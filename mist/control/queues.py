"""QueueService: mist queues (destinations) and each function's dead-letter queue.

A queue is a durable list of messages in the control database, made by the first message sent
to it (a `queue:NAME` destination). Consumers receive messages, which hides them for a
visibility timeout, and delete them once handled; a message not deleted in time is received
again (at-least-once, as SQS). A function's dead-letter queue is the queue `dlq:NAME`: the
destination records of its events that failed for good, listed, shown and redriven (run
again as new asynchronous invocations, and removed from the queue in the same transaction).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from mist.control.asyncpolicy import dlq_name
from mist.control.batching import SerialWriter
from mist.control.events import EventService
from mist.control.functions import FunctionService
from mist.control.invocations import new_invocation_id
from mist.control.store import MessageQueues, NewEvent, QueueMessage, QueueSummary
from mist.errors import InvalidRequest, NotFound
from mist.models import NAME_RE, NAME_RULE, epoch, iso, split_id

REDRIVE_MAX = 10_000  # messages one redrive moves at most (call again for more)
RECEIVE_MAX = 100
VISIBILITY_MAX_S = 12 * 3600


def check_queue_name(name: str) -> str:
    """`name` if it is a valid queue id: `queue` or `tenant/queue` (models.qualify)."""
    tenant, local = split_id(name)
    if not NAME_RE.fullmatch(local) or not NAME_RE.fullmatch(tenant):
        raise InvalidRequest(f"invalid queue name {local!r}: use {NAME_RULE}")
    return name


def message_json(m: QueueMessage) -> dict[str, Any]:
    try:
        body: Any = json.loads(m.body)
    except ValueError:
        body = m.body.decode("utf-8", "replace")
    return {"id": m.id, "sent_at": iso(epoch(m.sent_at)), "receive_count": m.receive_count, "body": body}


def dlq_entry(m: QueueMessage) -> dict[str, Any]:
    """A dead-letter queue entry in one line: when, how many attempts, the last error."""
    record = message_json(m)["body"]
    context = record.get("requestContext", {}) if isinstance(record, dict) else {}
    response = record.get("responsePayload") if isinstance(record, dict) else None
    error = response if isinstance(response, dict) else {}
    return {
        "id": m.id,
        "sent_at": iso(epoch(m.sent_at)),
        "invocation_id": context.get("requestId"),
        "condition": context.get("condition"),
        "attempts": context.get("approximateInvokeCount"),
        "error_type": error.get("errorType"),
        "error_message": error.get("errorMessage"),
    }


@dataclass(frozen=True)
class Redriven:
    message_id: str
    invocation_id: str


class QueueService:
    def __init__(
        self,
        store: MessageQueues,
        events: EventService,
        functions: FunctionService,
        writer: SerialWriter,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._events = events
        self._functions = functions
        self._writer = writer
        self._wall = wall

    # -- queues ----------------------------------------------------------------------------------

    async def list(self, tenant: str | None = None) -> list[QueueSummary]:
        """The queues that hold messages (dead-letter queues are listed per function, not here);
        with `tenant`, that tenant's, by their names in it."""
        found = await asyncio.to_thread(self._store.list_queues, self._wall())
        queues = [q for q in found if not q.name.startswith("dlq:")]
        if tenant is None:
            return queues
        return [replace(q, name=split_id(q.name)[1]) for q in queues if split_id(q.name)[0] == tenant]

    async def send(self, queue: str, body: bytes) -> str:
        """Put one message in a queue (a dead-letter queue: `asyncpolicy.dlq_name(function)`),
        durably: it is stored when this returns. For mist's own producers (connectors that
        dead-letter a message); the API has no send."""
        [message_id] = await self._writer.run(self._store.send, queue, [body], self._wall())
        return message_id

    async def receive(self, queue: str, *, limit: int = 10, visibility_s: float = 30.0) -> list[QueueMessage]:
        check_queue_name(queue)
        if not 1 <= limit <= RECEIVE_MAX:
            raise InvalidRequest(f"max must be from 1 to {RECEIVE_MAX}, got {limit}")
        if not 0 <= visibility_s <= VISIBILITY_MAX_S:
            raise InvalidRequest(f"visibility_timeout must be from 0 to {VISIBILITY_MAX_S} seconds, got {visibility_s}")
        return await self._writer.run(
            self._store.receive, queue, self._wall(), limit=limit, visibility_s=visibility_s
        )

    async def delete(self, queue: str, ids: Sequence[str]) -> int:
        check_queue_name(queue)
        return await self._writer.run(self._store.delete, queue, list(ids))

    # -- dead-letter queues ------------------------------------------------------------------------

    async def dead_letters(self, function: str, *, limit: int = 100) -> list[QueueMessage]:
        return await asyncio.to_thread(self._store.peek, dlq_name(function), limit=limit)

    async def dead_letter(self, function: str, message_id: str) -> QueueMessage:
        found = await asyncio.to_thread(self._store.peek, dlq_name(function), limit=1, message_id=message_id)
        if not found:
            local = split_id(function)[1]
            raise NotFound(
                f"no message {message_id!r} in the dead-letter queue of {local!r}; `mist dlq ls {local}` lists them"
            )
        return found[0]

    async def redrive(self, function: str, ids: Sequence[str] | None = None) -> list[Redriven]:
        """Run dead-lettered events again as new asynchronous invocations (the function's newest
        version), each removed from the queue as its new event is stored. `ids` None: all (at
        most REDRIVE_MAX per call)."""
        await self._functions.resolve(function)  # NotFound: nothing to run them on
        queue = dlq_name(function)
        if ids is None:
            messages = await asyncio.to_thread(self._store.peek, queue, limit=REDRIVE_MAX)
        else:
            messages = []
            for message_id in dict.fromkeys(ids):
                messages.append(await self.dead_letter(function, message_id))
        moves = [(m.id, NewEvent(new_invocation_id(), function, None, _request_payload(m), "redrive"))
                 for m in messages]  # fmt: skip
        created = await self._writer.run(self._store.redrive, queue, moves, self._wall())
        out = [Redriven(mid, inv) for (mid, _), inv in zip(moves, created) if inv is not None]
        if out:
            self._events.notify(function)
        return out


def _request_payload(m: QueueMessage) -> bytes:
    """The event of a dead-lettered record, as it was first sent."""
    record = message_json(m)["body"]
    payload = record.get("requestPayload") if isinstance(record, dict) else None
    return json.dumps(payload).encode()
