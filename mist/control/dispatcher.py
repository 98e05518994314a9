"""Dispatcher: runs stored asynchronous invocations, at least once each, whatever crashes.

    claim (lease) -> InvocationService.invoke -> asyncpolicy.decide/route -> settle

One loop per `mist up`. It wakes when an event is enqueued (EventService.on_enqueue), when an
attempt frees a slot, when a retry falls due, and every `poll_s` (events stored by other
processes, leases of dead dispatchers). For each function with due events it leases as many
as the function has room for: `asyncpolicy.async_slots` attempts running at once (concurrency x
`instances_per_function`, at most max_instances' worth), plus as many again waiting locally, so
a slot that frees up is refilled without waiting for the database. Asynchronous work thus never
takes more than its share of a function, and synchronous callers keep the rest.

At-least-once: an event is leased (owner + lease end) before it runs and settled (its attempt
recorded, its next state and destination record stored, in one transaction) only after; the
leases of running attempts are renewed every `heartbeat_s`. If mist dies in between, the lease
runs out and the event runs again — at once on the next start of the same data dir
(`recover=True`: the data dir lock proves the old dispatcher is dead), or, with a database
shared by several processes (`mist up --db`, recover=False), on any of them once the lease end
has passed. Settlements are group
committed and retried until the database takes them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from mist.control import asyncpolicy as policy
from mist.control.batching import GroupCommit, SerialWriter
from mist.control.events import EventService
from mist.control.functions import FunctionService
from mist.control.invocations import InvocationService, new_invocation_id
from mist.control.store import (
    ClaimedEvent,
    EventIndex,
    EventQueue,
    Message,
    NewEvent,
    Settlement,
)
from mist.core.retry import Backoff
from mist.errors import (
    InvalidRequest,
    NoCapacity,
    NotFound,
    PlatformError,
    SpendCapReached,
)
from mist.metering.usage import UsageRecord
from mist.models import FunctionVersion

log = logging.getLogger(__name__)


@dataclass
class DispatcherConfig:
    """Fields may be set after construction; call validate() after."""

    instances_per_function: int = 4  # async attempts of a function at once: concurrency x this (<= max_instances)
    max_held: int = 512  # events leased at once, all functions (running + waiting locally)
    lease_s: float = 60.0  # a lease not renewed for this long is taken over by another dispatcher
    heartbeat_s: float = 10.0  # leases renewed (and expired idempotency keys purged) this often
    poll_s: float = 1.0  # look for due events this often even when not told of any
    stop_grace_s: float = 5.0  # on stop, running attempts get this long to finish
    backoff: Backoff = field(default_factory=Backoff)

    def validate(self) -> DispatcherConfig:
        checks = [
            ("instances_per_function", self.instances_per_function, self.instances_per_function >= 1, ">= 1"),
            ("max_held", self.max_held, self.max_held >= 1, ">= 1"),
            ("lease_s", self.lease_s, self.lease_s > 0, "> 0"),
            ("heartbeat_s", self.heartbeat_s, 0 < self.heartbeat_s < self.lease_s, "> 0 and < lease_s"),
            ("poll_s", self.poll_s, self.poll_s > 0, "> 0"),
            ("stop_grace_s", self.stop_grace_s, self.stop_grace_s >= 0, ">= 0"),
        ]
        for key, value, ok, rule in checks:
            if not ok:
                raise InvalidRequest(f"dispatcher config: {key} must be {rule}, got {value!r}")
        self.backoff.validate()
        return self


@dataclass(frozen=True)
class DispatcherStats:
    held: int  # leased now (running + waiting locally)
    running: int
    attempts: int  # attempts finished
    succeeded: int  # events finished with success
    retries: int  # attempts followed by a retry
    failed: int  # events finished with failure (dead-lettered or sent to on_failure)
    leases_lost: int  # settlements refused: another dispatcher had taken the event over
    settle_failures: int  # settlement batches the database refused (retried)


@dataclass
class _Function:
    slots: int = 1  # attempts at once
    running: int = 0
    waiting: deque[ClaimedEvent] = field(default_factory=deque)

    @property
    def held(self) -> int:
        return self.running + len(self.waiting)


def new_owner() -> str:
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{secrets.token_hex(4)}"


class Dispatcher:
    def __init__(
        self,
        queue: EventQueue,
        index: EventIndex,
        events: EventService,
        functions: FunctionService,
        invocations: InvocationService,
        writer: SerialWriter,
        config: DispatcherConfig | None = None,
        *,
        recover: bool = False,
        wall: Callable[[], float] = time.time,
        draw: Callable[[], float] = random.random,
    ) -> None:
        self.config = (config or DispatcherConfig()).validate()
        self.owner = new_owner()
        self._queue = queue
        self._index = index
        self._events = events
        self._functions = functions
        self._invocations = invocations
        self._writer = writer
        self._recover = recover
        self._wall = wall
        self._draw = draw
        self._settle = GroupCommit(lambda batch: queue.settle(batch, self._wall()), writer)
        self._fns: dict[str, _Function] = {}
        self._ready: set[str] = set()  # functions that may have due events
        self._timers: dict[str, float] = {}  # function -> wall time its next known event falls due
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: set[str] = set()  # ids of the events leased to this dispatcher
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._closing = False
        self._counts = dict.fromkeys(
            ("attempts", "succeeded", "retries", "failed", "leases_lost", "settle_failures"), 0
        )
        events.on_enqueue(self.notify)

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._recover:
            released = await self._writer.run(self._queue.release, self._wall())
            if released:
                log.info("%d asynchronous invocations were running when mist stopped; running them again",
                         released)  # fmt: skip
        self._loop_task = asyncio.create_task(self._run(), name="event-dispatcher")
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="event-lease-heartbeat")

    async def stop(self) -> None:
        """Stop claiming; give running attempts `stop_grace_s`; hand back every other lease."""
        self._closing = True
        self._wake.set()
        if self._loop_task is not None:
            await self._loop_task
        for fn in self._fns.values():
            self._held.difference_update(e.id for e in fn.waiting)
            fn.waiting.clear()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=self.config.stop_grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
        try:
            await self._writer.run(self._queue.release, self._wall(), self.owner)
        except Exception:  # the leases run out instead
            log.exception("could not hand back the event leases of %s", self.owner)

    def notify(self, function: str) -> None:
        """Events of `function` may be due (just stored, or a slot freed)."""
        self._ready.add(function)
        self._wake.set()

    def statistics(self) -> DispatcherStats:
        return DispatcherStats(
            held=sum(f.held for f in self._fns.values()),
            running=sum(f.running for f in self._fns.values()),
            **self._counts,
        )

    # -- the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        next_poll = 0.0
        while not self._closing:
            now = self._wall()
            if now >= next_poll:
                next_poll = now + self.config.poll_s
                await self._poll(now)
            for fn, due in list(self._timers.items()):
                if due <= now:
                    del self._timers[fn]
                    self._ready.add(fn)
            try:
                await self._claim_ready()
            except Exception:  # the database is unreachable: try again at the next poll
                log.exception("claiming asynchronous invocations failed; will retry")
            wait = min([next_poll, *self._timers.values()]) - self._wall()
            if wait > 0 and not self._wake.is_set():
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except TimeoutError:
                    pass
            self._wake.clear()

    async def _poll(self, now: float) -> None:
        try:
            pending = await asyncio.to_thread(self._index.pending)
        except Exception:
            log.exception("looking for due asynchronous invocations failed; will retry")
            return
        for fn, due in pending.items():
            if due <= now:
                self._ready.add(fn)
            elif due < self._timers.get(fn, float("inf")):
                self._timers[fn] = due

    async def _claim_ready(self) -> None:
        held = sum(f.held for f in self._fns.values())
        for name in list(self._ready):
            if self._closing:
                return
            fn = self._fns.setdefault(name, _Function())
            fn.slots = await self._slots(name)
            room = min(2 * fn.slots - fn.held, self.config.max_held - held)
            if room <= 0:
                continue  # stays ready: a finished attempt wakes the loop
            self._ready.discard(name)  # a notify() while claiming sets it again
            claimed = await self._writer.run(
                self._queue.claim, self.owner, name, self._wall(), limit=room, lease_s=self.config.lease_s
            )
            if len(claimed) == room:
                self._ready.add(name)  # there may be more
            held += len(claimed)
            self._held.update(c.id for c in claimed)
            fn.waiting.extend(claimed)
            self._start(name, fn)

    async def _slots(self, name: str) -> int:
        try:
            fv = await self._functions.resolve(name)
        except NotFound:
            return 1  # its events are settled as "missing", one at a time
        return policy.async_slots(fv.concurrency, fv.max_instances, self.config.instances_per_function)

    def _start(self, name: str, fn: _Function) -> None:
        while fn.waiting and fn.running < fn.slots and not self._closing:
            event = fn.waiting.popleft()
            fn.running += 1
            task = asyncio.create_task(self._attempt(event, fn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- one attempt ------------------------------------------------------------------------------

    async def _attempt(self, event: ClaimedEvent, fn: _Function) -> None:
        try:
            settlement = await self._run_attempt(event)
            await self._commit(settlement, event.function)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug: the lease runs out and the event runs again
            log.exception("asynchronous invocation %s (attempt %d) failed in the dispatcher", event.id, event.attempt)
        finally:
            self._held.discard(event.id)
            fn.running -= 1
            self._start(event.function, fn)
            if event.function in self._ready:
                self._wake.set()  # room to claim more

    async def _run_attempt(self, event: ClaimedEvent) -> Settlement:
        started = self._wall()
        progress = policy.Progress(event.created_at, event.attempt, event.function_errors)
        try:
            fv = await self._functions.resolve(event.function, event.version)
        except NotFound as exc:
            decision = policy.decide(policy.RetryPolicy(), progress, policy.MISSING, started, draw=0.0)
            return self._settlement(event, None, decision, policy.MISSING, started, started, None,
                                    error=(exc.code, exc.message))  # fmt: skip
        rules = policy.RetryPolicy(fv.retries, float(fv.max_event_age_s), self.config.backoff)
        if policy.expired(rules, event.created_at, started):
            decision = policy.Decision("fail", None, event.function_errors, "EventAgeExceeded")
            too_old = ("EventAgeExceeded", f"not run: the event is older than max_event_age_s ({fv.max_event_age_s} s)")
            return self._settlement(event, fv, decision, "expired", started, started, None, error=too_old)
        record_id = f"{event.id}-{event.attempt}"
        try:
            out = await self._invocations.invoke(
                fv, event.payload, trigger=event.trigger, invocation_id=record_id, request_id=event.id,
                settle_usage=True,
            )
        except (PlatformError, SpendCapReached) as exc:  # it did not run: retried until max_event_age_s
            retry_after = exc.retry_after if isinstance(exc, NoCapacity) else 0.0
            decision = policy.decide(rules, progress, policy.ERROR, self._wall(), draw=self._draw(),
                                     retry_after=retry_after)  # fmt: skip
            ran_record = None if isinstance(exc, SpendCapReached) else record_id
            return self._settlement(event, fv, decision, policy.ERROR, started, self._wall(), ran_record,
                                    error=(exc.code, exc.message))  # fmt: skip
        r = out.result
        outcome = policy.SUCCEEDED if r.ok else policy.FAILED
        decision = policy.decide(rules, progress, outcome, self._wall(), draw=self._draw())
        error = None if r.ok else (str((r.error or {}).get("errorType", "Unknown")),
                                   str((r.error or {}).get("errorMessage", "")))  # fmt: skip
        response = r.payload if r.ok else json.dumps(r.error or {}).encode()
        return self._settlement(event, fv, decision, outcome, started, self._wall(), record_id, error=error,
                                response=response, usage=out.usage)  # fmt: skip

    def _settlement(
        self,
        event: ClaimedEvent,
        fv: FunctionVersion | None,
        decision: policy.Decision,
        outcome: str,
        started: float,
        ended: float,
        record_id: str | None,
        *,
        error: tuple[str, str] | None = None,
        response: bytes | None = None,
        usage: UsageRecord | None = None,
    ) -> Settlement:
        ran = outcome in (policy.SUCCEEDED, policy.FAILED)
        base = dict(
            event_id=event.id, owner=self.owner, attempt=event.attempt, started_at=started, ended_at=ended,
            outcome=outcome, error_type=error[0] if error else None, error_message=error[1] if error else None,
            record_id=record_id, version=fv.version if fv else None,
            function_errors=decision.function_errors, usage=usage,
        )  # fmt: skip
        if decision.action == "retry":
            return Settlement(**base, status="queued", due_at=decision.due_at)
        where = policy.route(decision, event.function, fv.on_success if fv else None, fv.on_failure if fv else None)
        messages: tuple[Message, ...] = ()
        chained: tuple[NewEvent, ...] = ()
        if where.kind is not None and where.target is not None:
            record = policy.destination_record(
                request_id=event.id, function_arn=policy.function_arn(event.function, event.version),
                condition=decision.condition or "RetriesExhausted", invoke_count=self._invoked(event, outcome),
                request_payload=event.payload, executed_version=fv.version if fv and ran else None,
                response_payload=response if ran else _platform_error(error),
                function_error=outcome == policy.FAILED, now=ended,
            )  # fmt: skip
            if where.kind == "queue":
                messages = (Message(where.target, record),)
            else:
                chained = (NewEvent(new_invocation_id(), where.target, None, record, "destination"),)
        return Settlement(**base, status=where.status, due_at=None, condition=decision.condition,
                          destination=where.destination, messages=messages, events=chained)  # fmt: skip

    @staticmethod
    def _invoked(event: ClaimedEvent, outcome: str) -> int:
        """approximateInvokeCount: the attempts so far, this one only if the function ran."""
        return event.attempt - (0 if outcome in (policy.SUCCEEDED, policy.FAILED) else 1)

    async def _commit(self, settlement: Settlement, function: str) -> None:
        """Store the settlement, retrying while the database refuses (the lease is renewed
        meanwhile); then count it and wake whoever its outcome concerns."""
        delay = 0.05
        while True:
            try:
                applied = await self._settle.submit(settlement)
                break
            except Exception:
                self._counts["settle_failures"] += 1
                log.exception("storing the outcome of %s failed; retrying in %.2f s", settlement.event_id, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._counts["attempts"] += 1
        if applied and settlement.usage is not None and self._invocations.meter is not None:
            self._invocations.meter.settled(settlement.usage)  # stored with the settlement
        if not applied:
            self._counts["leases_lost"] += 1
            log.warning("asynchronous invocation %s was taken over by another dispatcher during attempt %d",
                        settlement.event_id, settlement.attempt)  # fmt: skip
            return
        if settlement.status == "queued":
            self._counts["retries"] += 1
            due = settlement.due_at
            if due is not None and due < self._timers.get(function, float("inf")):
                self._timers[function] = due
                self._wake.set()
        elif settlement.status == "succeeded":
            self._counts["succeeded"] += 1
        else:
            self._counts["failed"] += 1
        for chained in settlement.events:
            self._events.notify(chained.function)

    # -- leases ------------------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            now = self._wall()
            try:
                await self._writer.run(self._queue.renew, self.owner, list(self._held), now + self.config.lease_s)
                await self._writer.run(self._queue.purge, now)
            except Exception:
                log.exception("renewing the event leases of %s failed; will retry", self.owner)


def _platform_error(error: tuple[str, str] | None) -> bytes | None:
    if error is None:
        return None
    return json.dumps({"errorType": error[0], "errorMessage": error[1]}).encode()

