"""The Deliver callback the trigger manager hands a connector: one invocation per batch.

    async def invoke(payload: bytes) -> bytes:      # the function's JSON result, or raise
        ...
    task = asyncio.create_task(connector.run(batch_deliverer(invoke, spec.format), dead_letter))

The batch becomes one event in the trigger's format (mist.triggers.events); the function's
result is read for batchItemFailures (mist.triggers.policy.parse_batch_item_failures). An
exception from `invoke` (a FunctionError, NoCapacity...) fails the whole batch; so does a result
that is not JSON, as in Lambda.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from mist.triggers.connectors.base import Deliver, Message
from mist.triggers.events import encode, event_for
from mist.triggers.policy import parse_batch_item_failures

Invoke = Callable[[bytes], Awaitable[bytes | str | Any]]


def batch_deliverer(invoke: Invoke, format: str = "lambda") -> Deliver:
    async def deliver(batch: list[Message]) -> set[str]:
        result = await invoke(encode(event_for(format, batch)))
        ids = [m.id for m in batch]
        if isinstance(result, (bytes, str)):
            try:
                result = json.loads(result)
            except ValueError:
                return set(ids)
        return parse_batch_item_failures(result, ids)

    return deliver
