"""What every connector shares: reconnect supervision, consumer scaling, batching and settling.

A broker module supplies only I/O, as two small protocols: a `Session` (one live connection:
open a consumer, read the backlog, close) and its `Consumer`s (fetch, ack, retry, touch,
close). `BrokerConnector.run()` does the rest:

    run ─ supervise: connect ─ session ─ (broker error) ─ status "reconnecting", backoff_s, again
            session: scale loop ─ every scale_interval_s (sooner after a full batch): backlog
                       │   -> policy.scale_consumers -> start or stop workers
                       └ worker i: collect a batch (policy.batch_wait_s) -> deliver -> policy.settle
                                   -> dead_letter + ack / ack / retry(delay = backoff_s(count))

A worker keeps its batch alive at the broker (`touch`) while the function runs, so a long
invocation is not taken for a dead consumer's. Every decision is in mist.triggers.policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, Protocol, TypeVar

from mist.core.retry import backoff_s
from mist.errors import FunctionError
from mist.triggers.connectors.base import (
    ConnectorState,
    ConnectorStatus,
    DeadLetter,
    Deliver,
    Failed,
    Message,
)
from mist.triggers.connectors.spec import ConnectorSpec
from mist.triggers.policy import ScaleState, ScalingPolicy, batch_wait_s, scale_consumers, settle

LISTED_FAILED = "the function listed this message in batchItemFailures"


class Consumer(Protocol):
    async def fetch(self, max_n: int, timeout_s: float) -> list[Message]:
        """Up to max_n messages; waits up to timeout_s for the first, then takes what is there."""
        ...

    async def ack(self, messages: Sequence[Message]) -> None: ...

    async def retry(self, message: Message, delay_s: float) -> None:
        """Hand back for redelivery, not before delay_s, with delivery_count + 1."""
        ...

    async def touch(self, messages: Sequence[Message]) -> None:
        """Still working on these: keep them from being redelivered elsewhere."""
        ...

    async def close(self) -> None:
        """Stop; hand back what was fetched and not settled where the broker allows it."""
        ...


class Session(Protocol):
    async def consumer(self, index: int) -> Consumer: ...

    async def backlog(self) -> int | None: ...

    async def close(self) -> None: ...


def describe(exc: BaseException) -> str:
    """An exception as one line for status and dead letters; a TaskGroup's first error unwrapped."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, FunctionError):
        return f"{exc.error_type}: {exc.error_message}"
    text = str(exc) or repr(exc)
    return f"{type(exc).__name__}: {text}"


def stop_if_cancelled() -> None:
    """Raise CancelledError if this task was asked to stop.

    Client libraries can swallow a cancellation that lands inside them at the wrong moment
    (redis-py issues #2028, #2551: a blocking read under a timeout), leaving a loop that never
    ends. The loops here check after each call into a client, so a cancelled connector stops.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class StatusBoard:
    """The mutable counters behind ConnectorStatus."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.state = ConnectorState.CONNECTING
        self.since = clock()
        self.last_error: str | None = None
        self.backlog: int | None = None
        self.consumers = 0
        self.delivered = self.failed = self.dead_lettered = 0

    def enter(self, state: ConnectorState) -> None:
        if state != self.state:
            self.state, self.since = state, self._clock()

    def snapshot(self) -> ConnectorStatus:
        return ConnectorStatus(self.state, self.last_error, self.since, self.backlog, self.consumers,
                               self.delivered, self.failed, self.dead_lettered)


def failures_of(result: Failed | None, batch: Sequence[Message]) -> dict[str, str]:
    """Deliver's answer as {id: error} over the batch's ids (unknown ids are ignored)."""
    ids = {m.id for m in batch}
    if not result:
        return {}
    if isinstance(result, Mapping):
        return {str(k): str(v) for k, v in result.items() if k in ids}
    return {i: LISTED_FAILED for i in result if i in ids}


def unique_ids(batch: list[Message]) -> list[Message]:
    """The batch with repeated ids (a publisher reusing AMQP message ids) made unique: "id#2"."""
    seen: dict[str, int] = {}
    out = []
    for m in batch:
        n = seen.get(m.id, 0) + 1
        seen[m.id] = n
        out.append(m if n == 1 else replace(m, id=f"{m.id}#{n}"))
    return out


class BrokerConnector:
    """The Connector protocol over a broker module's `_connect() -> Session`."""

    def __init__(self, spec: ConnectorSpec, *, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 rand: Callable[[], float] = random.random) -> None:
        self.spec = spec.validate()
        self.source = self.spec.source  # every Message carries it: computed once
        self._clock, self._monotonic, self._rand = clock, monotonic, rand
        self._board = StatusBoard(clock)
        self._session: Session | None = None
        self._full = asyncio.Event()  # a worker read a full batch: look at the backlog now

    async def _connect(self) -> Session:
        raise NotImplementedError

    def status(self) -> ConnectorStatus:
        return self._board.snapshot()

    async def backlog(self) -> int | None:
        session = self._session
        if session is None:
            return None
        try:
            self._board.backlog = await session.backlog()
        except Exception:  # a broker error here is the session's to report
            return None
        return self._board.backlog

    async def run(self, deliver: Deliver, dead_letter: DeadLetter) -> None:
        failures = 0
        try:
            while True:
                try:
                    await self._session_run(deliver, dead_letter)
                    error = "the broker connection ended"
                except Exception as exc:  # broker trouble of any kind: report, back off, reconnect
                    error = describe(exc)
                stop_if_cancelled()
                failures = 1 if self._board.state == ConnectorState.CONNECTED else failures + 1
                self._board.last_error = error
                self._board.consumers = 0
                self._board.enter(ConnectorState.RECONNECTING)
                await asyncio.sleep(backoff_s(failures, draw=self._rand(), policy=self.spec.tuning.reconnect))
        finally:
            self._board.consumers = 0
            self._board.enter(ConnectorState.STOPPED)

    async def _session_run(self, deliver: Deliver, dead_letter: DeadLetter) -> None:
        session = await asyncio.wait_for(self._connect(), self.spec.tuning.connect_timeout_s)
        try:
            self._session = session
            self._board.enter(ConnectorState.CONNECTED)
            async with asyncio.TaskGroup() as tg:  # the workers; the scale loop runs in the body so that
                await self._scale(session, tg, deliver, dead_letter)  # a worker's failure cancels it cleanly
        finally:
            self._session = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.close(), self.spec.tuning.connect_timeout_s)

    # --- scaling --------------------------------------------------------------------------

    async def _scale(self, session: Session, tg: asyncio.TaskGroup, deliver: Deliver,
                     dead_letter: DeadLetter) -> None:
        spec, tuning = self.spec, self.spec.tuning
        policy = ScalingPolicy(spec.max_consumers, spec.batch_size, tuning.batches_per_consumer,
                               tuning.scale_down_delay_s).validate()
        running: dict[int, tuple[asyncio.Task[None], asyncio.Event]] = {}  # index -> worker
        active: list[int] = []  # indices not asked to stop, in start order
        state = ScaleState()
        while True:
            backlog = await session.backlog()
            stop_if_cancelled()
            self._board.backlog = backlog
            for index in [i for i, (task, _) in running.items() if task.done()]:
                del running[index]
            want, state = scale_consumers(policy, backlog, len(active) or 1, state, self._monotonic())
            while len(active) < want:
                index = min(set(range(len(running) + 1)) - set(running))
                stop = asyncio.Event()
                running[index] = (tg.create_task(self._work(session, index, stop, deliver, dead_letter)), stop)
                active.append(index)
            while len(active) > want:
                running[active.pop()][1].set()  # finishes its batch, then returns
            self._board.consumers = len(active)
            # every scale_interval_s, or sooner when a worker reads a full batch (a backlog is
            # building up), but not more often than ten times per interval
            await asyncio.sleep(tuning.scale_interval_s / 10)
            self._full.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(tuning.scale_interval_s * 0.9):  # not wait_for: see LocalQueue.take
                    await self._full.wait()

    # --- one consumer ---------------------------------------------------------------------

    async def _work(self, session: Session, index: int, stop: asyncio.Event, deliver: Deliver,
                    dead_letter: DeadLetter) -> None:
        consumer = await session.consumer(index)
        try:
            while not stop.is_set():
                batch, touched_at = await self._collect(consumer)
                stop_if_cancelled()
                if len(batch) >= self.spec.batch_size:
                    self._full.set()
                if batch:
                    await self._process(consumer, batch, deliver, dead_letter, touched_at)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.close(), self.spec.tuning.connect_timeout_s)

    async def _collect(self, consumer: Consumer) -> tuple[list[Message], float]:
        """A batch, and when its messages were last kept alive (fetched or touched). A long
        window keeps them too: touched every third of the visibility timeout, each wait for more
        ending when the next touch is due (waiting a whole third after a touch that came late let
        gaps grow to two thirds, and with the delivery's first third, to the whole timeout)."""
        size, window = self.spec.batch_size, self.spec.batch_window_s
        batch = await consumer.fetch(size, self.spec.tuning.poll_s)
        if not batch:
            return [], 0.0
        first_at = touched_at = self._monotonic()
        every = self.spec.tuning.visibility_timeout_s / 3
        while len(batch) < size:
            now = self._monotonic()
            wait = batch_wait_s(len(batch), first_at, now, size, window)
            if wait <= 0:
                break
            if now - touched_at >= every:
                await consumer.touch(batch)
                touched_at = now
            batch += await consumer.fetch(size - len(batch), min(wait, touched_at + every - now))
        return batch, touched_at

    async def _process(self, consumer: Consumer, batch: list[Message], deliver: Deliver,
                       dead_letter: DeadLetter, touched_at: float | None = None) -> None:
        batch = unique_ids(batch)
        keep_alive = asyncio.create_task(self._keep_alive(consumer, batch, touched_at))
        try:
            failed = failures_of(await deliver(batch), batch)
        except Exception as exc:  # the whole batch failed
            error = describe(exc)
            failed = {m.id: error for m in batch}
        finally:
            keep_alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keep_alive
        outcome = settle(batch, failed, self.spec.max_attempts)
        dead_ok, give_back = [], list(outcome.retry)
        for message in outcome.dead:
            try:
                await dead_letter(message, failed[message.id])
                dead_ok.append(message)
            except Exception as exc:  # not acknowledged: it comes again, nothing is lost
                self._board.last_error = f"dead-letter failed, message handed back: {describe(exc)}"
                give_back.append(message)
        if outcome.ack or dead_ok:
            await consumer.ack([*outcome.ack, *dead_ok])
        for message in give_back:
            delay = backoff_s(max(1, message.delivery_count), draw=self._rand(), policy=self.spec.tuning.redelivery)
            await consumer.retry(message, delay)
        self._board.delivered += len(outcome.ack)
        self._board.failed += len(failed)
        self._board.dead_lettered += len(dead_ok)

    async def _keep_alive(self, consumer: Consumer, batch: list[Message], touched_at: float | None = None) -> None:
        """Touch the batch every third of the visibility timeout, the first time a third after
        `touched_at` (its last touch while it was collected), not a third after now."""
        every = self.spec.tuning.visibility_timeout_s / 3
        first = every if touched_at is None else max(0.0, touched_at + every - self._monotonic())
        while True:
            await asyncio.sleep(first)
            first = every
            try:
                await consumer.touch(batch)
            except Exception as exc:  # the ack will fail the same way and the session reconnect
                self._board.last_error = describe(exc)


# --- a local queue with delayed redelivery (MQTT's in-session buffer, the memory broker) ------

T = TypeVar("T")


@dataclass(order=True, slots=True)
class _Delayed(Generic[T]):
    due: float
    seq: int
    item: T = field(default=None, compare=False)  # type: ignore[assignment]


class LocalQueue(Generic[T]):
    """Ready items in arrival order, plus items that become ready at a later time."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._ready: deque[T] = deque()
        self._delayed: list[_Delayed[T]] = []
        self._seq = 0
        self._wakeup = asyncio.Event()

    def __len__(self) -> int:
        return len(self._ready) + len(self._delayed)

    def put(self, item: T) -> None:
        self._ready.append(item)
        self._wakeup.set()

    def put_later(self, item: T, delay_s: float) -> None:
        self._seq += 1
        heapq.heappush(self._delayed, _Delayed(self._monotonic() + delay_s, self._seq, item))
        self._wakeup.set()

    def drain(self) -> list[T]:
        items = [*self._ready, *(d.item for d in sorted(self._delayed))]
        self._ready.clear()
        self._delayed.clear()
        return items

    async def take(self, max_n: int, timeout_s: float) -> list[T]:
        deadline = self._monotonic() + timeout_s
        while True:
            now = self._monotonic()
            while self._delayed and self._delayed[0].due <= now:
                self._ready.append(heapq.heappop(self._delayed).item)
            if self._ready:
                return [self._ready.popleft() for _ in range(min(max_n, len(self._ready)))]
            wait = deadline - now
            if wait <= 0:
                return []
            if self._delayed:
                wait = min(wait, self._delayed[0].due - now)
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                # not asyncio.wait_for: on 3.11 it loses a cancellation that meets the wake-up,
                # and the consumer cancelled by stop() would go on waiting
                async with asyncio.timeout(wait):
                    await self._wakeup.wait()
