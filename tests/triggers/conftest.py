"""Fixtures for the trigger tests: one harness per real broker (plus the in-memory fake), a
fresh target and group per test, cleaned up after it."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mist.core.retry import Backoff
from mist.triggers.connectors import Connector, ConnectorState, Message, Tuning
from tests.triggers.brokers import HARNESSES, Harness

# every delay shrunk so a test takes a fraction of a second
FAST = Tuning(redelivery=Backoff(0.02, 2.0, 0.1), reconnect=Backoff(0.05, 2.0, 0.3), visibility_timeout_s=5.0,
              poll_s=0.1, connect_timeout_s=2.0, scale_interval_s=0.05, scale_down_delay_s=0.3)


@pytest.fixture(params=list(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Harness:
    return HARNESSES[request.param]()


@pytest.fixture
async def target(harness: Harness, group: str) -> AsyncIterator[str]:
    name = harness.new_target()
    if hasattr(harness, "create"):
        await harness.create(name)
    yield name
    await harness.cleanup(name, group)


@pytest.fixture
def group() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


class Recorder:
    """A Deliver and a DeadLetter that remember every call; `behaviour(batch)` (sync or async) may
    return the failed ids (a set or a dict) or raise."""

    def __init__(self, behaviour: Callable[[list[Message]], Any] | None = None) -> None:
        self.behaviour = behaviour
        self.batches: list[list[Message]] = []
        self.dead: list[tuple[Message, str]] = []
        self.active = self.max_active = 0

    async def deliver(self, batch: list[Message]) -> Any:
        self.batches.append(batch)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            result = self.behaviour(batch) if self.behaviour else set()
            if inspect.isawaitable(result):
                result = await result
            return result if isinstance(result, (set, dict)) else set()  # anything else: success
        finally:
            self.active -= 1

    async def dead_letter(self, message: Message, error: str) -> None:
        self.dead.append((message, error))

    def bodies(self) -> list[bytes]:
        return [m.body for batch in self.batches for m in batch]

    def deliveries(self, body: bytes) -> list[Message]:
        return [m for batch in self.batches for m in batch if m.body == body]


def fail_first_delivery(batch: list[Message]) -> None:
    """A Recorder behaviour: a batch fails while all its messages are on their first delivery."""
    if all(m.delivery_count == 1 for m in batch):
        raise RuntimeError("function failed")


@contextlib.asynccontextmanager
async def running(connector: Connector, recorder: Recorder, *, connected: bool = True) -> AsyncIterator[None]:
    task = asyncio.create_task(connector.run(recorder.deliver, recorder.dead_letter))
    try:
        if connected:
            await until(lambda: connector.status().state == ConnectorState.CONNECTED or task.done(), what="connected")
        yield
        assert not task.done(), f"run() returned: {task.exception() if not task.cancelled() else 'cancelled'}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert connector.status().state == ConnectorState.STOPPED


async def until(condition: Callable[[], bool], *, timeout: float = 10.0, what: str = "the condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)

