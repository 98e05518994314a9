"""The dispatcher over the in-memory store and a fake worker: retries, destinations, DLQ,
idempotency, leases. Backoff is shrunk to milliseconds; nothing waits on real timeouts."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest

from mist.control.batching import SerialWriter
from mist.control.dispatcher import Dispatcher, DispatcherConfig
from mist.control.events import EventService
from mist.control.functions import FunctionService
from mist.control.invocations import InvocationService
from mist.control.layers import LayerStore
from mist.control.queues import QueueService
from mist.control.records import InvocationLog
from mist.control.store import NewEvent, NewVersion
from mist.core.retry import Backoff
from mist.errors import NoCapacity, NotFound, PayloadTooLarge
from mist.testing.stores import MemoryStore
from mist.testing.worker import FakeWorker, echo, fails
from mist.worker.types import InvokeResult

FAST = DispatcherConfig(backoff=Backoff(base_s=0.01, factor=2.0, cap_s=0.05), poll_s=0.05, heartbeat_s=0.1,
                        lease_s=0.5, stop_grace_s=0.5)  # fmt: skip


@dataclass
class Platform:
    store: MemoryStore
    worker: FakeWorker
    functions: FunctionService
    invocations: InvocationService
    records: InvocationLog
    events: EventService
    queues: QueueService
    writer: SerialWriter
    dispatcher: Dispatcher | None = None

    def deploy(self, name: str = "hello", **config: object) -> None:
        self.store.create_version(
            NewVersion(name=name, handler="main.handler", memory_mb=128, timeout_s=5.0,
                       concurrency=int(config.pop("concurrency", 1)), env={}, code_sha256="a" * 64, code_size=1,
                       layer_sha256=None, **config),  # type: ignore[arg-type]
            datetime.now(timezone.utc),
        )  # fmt: skip

    async def dispatch(self, config: DispatcherConfig = FAST, *, recover: bool = False) -> Dispatcher:
        d = Dispatcher(self.store, self.store, self.events, self.functions, self.invocations, self.writer,
                       DispatcherConfig(**vars(config)), recover=recover)  # fmt: skip
        await d.start()
        self.dispatcher = d
        return d

    async def settled(self, inv_id: str, *statuses: str, timeout: float = 5.0):
        statuses = statuses or ("succeeded", "failed", "dead-lettered")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            view = await self.events.get(inv_id)
            if view is not None and view.status in statuses:
                return view
            await asyncio.sleep(0.005)
        raise AssertionError(f"{inv_id} is {view.status if view else None}, not {statuses}")


@pytest.fixture
async def mist(tmp_path):
    store = MemoryStore()
    worker = FakeWorker()
    records = InvocationLog(store, flush_interval=0.01)
    await records.start()
    functions = FunctionService(tmp_path, store, LayerStore(tmp_path / "layers"), worker.retire)
    invocations = InvocationService(functions, worker, records)
    writer = SerialWriter()
    events = EventService(functions, store, store, writer)
    p = Platform(store, worker, functions, invocations, records, events,
                 QueueService(store, events, functions, writer), writer)  # fmt: skip
    p.deploy()
    yield p
    if p.dispatcher is not None:
        await p.dispatcher.stop()
    await records.stop()
    writer.close()


def fails_times(n: int, behaviour=echo):
    """Fail the first n calls (per function), then behave."""
    seen: dict[str, int] = {}

    def run(spec, payload):
        seen[spec.function_name] = seen.get(spec.function_name, 0) + 1
        if seen[spec.function_name] <= n:
            return fails("ValueError", f"failure {seen[spec.function_name]}")(spec, payload)
        return behaviour(spec, payload)

    return run


async def test_an_event_runs_once_and_reports_one_succeeded_attempt(mist):
    await mist.dispatch()
    inv_id = await mist.events.enqueue("hello", b'{"n": 1}', trigger="event")
    view = await mist.settled(inv_id)
    assert (view.status, view.condition, view.destination) == ("succeeded", "Success", None)
    [attempt] = view.attempts
    assert (attempt.attempt, attempt.outcome, attempt.version, attempt.record_id) == (1, "succeeded", 1, f"{inv_id}-1")
    spec, request_id, payload = mist.worker.calls[-1]
    assert (spec.function_name, request_id, payload) == ("hello", inv_id, b'{"n": 1}')  # aws_request_id = event id
    record, _ = await mist.records.get(f"{inv_id}-1")
    assert (record.trigger, record.status) == ("event", "succeeded")


async def test_function_errors_are_retried_then_the_event_succeeds(mist):
    mist.worker.behaviour = fails_times(2)
    await mist.dispatch()
    inv_id = await mist.events.enqueue("hello", b"{}", trigger="event")
    view = await mist.settled(inv_id)
    assert view.status == "succeeded" and view.function_errors == 2
    assert [(a.outcome, a.error_message) for a in view.attempts] == [
        ("failed", "failure 1"), ("failed", "failure 2"), ("succeeded", None)]
    first, second, third = view.attempts
    assert first.ended_at <= second.started_at and second.ended_at <= third.started_at


async def test_exhausted_retries_dead_letter_the_lambda_record_and_redrive_runs_it_again(mist):
    mist.worker.behaviour = fails_times(3)
    await mist.dispatch()
    inv_id = await mist.events.enqueue("hello", b'{"order": 7}', trigger="event")
    view = await mist.settled(inv_id)
    assert (view.status, view.condition, view.destination, len(view.attempts)) == (
        "dead-lettered", "RetriesExhausted", "dlq", 3)
    [message] = await mist.queues.dead_letters("hello")
    record = json.loads(message.body)
    assert record["requestContext"] == {
        "requestId": inv_id, "functionArn": "arn:mist:lambda:local:default:function:hello:$LATEST",
        "condition": "RetriesExhausted", "approximateInvokeCount": 3}
    assert record["requestPayload"] == {"order": 7}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "1", "functionError": "Unhandled"}
    assert record["responsePayload"]["errorMessage"] == "failure 3"
    [moved] = await mist.queues.redrive("hello")  # the function works again by now
    assert moved.message_id == message.id
    again = await mist.settled(moved.invocation_id)
    assert again.status == "succeeded" and again.trigger == "redrive"
    assert mist.worker.calls[-1][2] == b'{"order": 7}'
    assert await mist.queues.dead_letters("hello") == []


async def test_zero_retries_means_one_attempt(mist):
    mist.deploy(retries=0)
    mist.worker.behaviour = fails("ValueError", "no")
    await mist.dispatch()
    view = await mist.settled(await mist.events.enqueue("hello", b"{}", trigger="event"))
    assert view.status == "dead-lettered" and len(view.attempts) == 1


async def test_success_goes_to_the_on_success_queue(mist):
    mist.deploy(on_success="queue:done")
    await mist.dispatch()
    inv_id = await mist.events.enqueue("hello", b'{"n": 2}', trigger="event")
    view = await mist.settled(inv_id)
    assert (view.status, view.condition, view.destination) == ("succeeded", "Success", "queue:done")
    [message] = await mist.queues.receive("done")
    record = json.loads(message.body)
    assert record["requestContext"]["condition"] == "Success"
    assert record["responsePayload"] == {"n": 2} and record["responseContext"]["functionError"] is None


async def test_failure_goes_to_the_on_failure_function_as_an_event(mist):
    mist.deploy(on_failure="function:alert", retries=0)
    mist.deploy("alert")
    mist.worker.behaviour = lambda spec, payload: (
        fails("KeyError", "k")(spec, payload) if spec.function_name == "hello" else echo(spec, payload))
    await mist.dispatch()
    inv_id = await mist.events.enqueue("hello", b"{}", trigger="event")
    view = await mist.settled(inv_id)
    assert (view.status, view.destination) == ("failed", "function:alert")
    deadline = time.monotonic() + 5
    while not [c for c in mist.worker.calls if c[0].function_name == "alert"] and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    [(_, _, payload)] = [c for c in mist.worker.calls if c[0].function_name == "alert"]
    record = json.loads(payload)
    assert record["requestContext"]["requestId"] == inv_id and record["responsePayload"]["errorType"] == "KeyError"
    assert await mist.queues.dead_letters("hello") == []


async def test_platform_errors_are_retried_without_using_up_retries(mist):
    mist.deploy(retries=0)
    busy = {"left": 2}

    def behaviour(spec, payload):
        if busy["left"]:
            busy["left"] -= 1
            raise NoCapacity("full", retry_after=0.0)
        return echo(spec, payload)

    mist.worker.behaviour = behaviour
    await mist.dispatch()
    view = await mist.settled(await mist.events.enqueue("hello", b"{}", trigger="event"))
    assert view.status == "succeeded" and view.function_errors == 0
    assert [(a.outcome, a.error_type) for a in view.attempts] == [
        ("error", "NoCapacity"), ("error", "NoCapacity"), ("succeeded", None)]


async def test_an_event_older_than_its_maximum_age_is_not_run(mist):
    mist.deploy(max_event_age_s=60)
    old = NewEvent("0" * 32, "hello", None, b"{}", "event")
    mist.store.enqueue([old], time.time() - 61)
    await mist.dispatch()
    view = await mist.settled(old.id)
    assert (view.status, view.condition) == ("dead-lettered", "EventAgeExceeded")
    assert view.attempts[0].outcome == "expired" and mist.worker.calls == []
    [message] = await mist.queues.dead_letters("hello")
    assert json.loads(message.body)["requestContext"]["approximateInvokeCount"] == 0


async def test_events_of_a_deleted_function_are_dead_lettered(mist):
    await mist.dispatch()
    mist.store.enqueue([NewEvent("1" * 32, "gone", None, b"{}", "event")], time.time())
    mist.dispatcher.notify("gone")
    view = await mist.settled("1" * 32)
    assert view.status == "dead-lettered" and view.attempts[0].error_type == "NotFound"
    assert len(await mist.queues.dead_letters("gone")) == 1


async def test_an_idempotency_key_runs_the_event_once(mist):
    await mist.dispatch()
    first = await mist.events.accept("hello", b"{}", trigger="event", idempotency_key="order-1")
    again = await mist.events.accept("hello", b'{"x": 1}', trigger="event", idempotency_key="order-1")
    assert first.created and not again.created and again.invocation_id == first.invocation_id
    await mist.settled(first.invocation_id)
    assert len(mist.worker.calls) == 1
    assert mist.events.statistics().duplicates == 1


async def test_enqueue_refuses_what_could_never_run(mist):
    with pytest.raises(NotFound):
        await mist.events.enqueue("nope", b"{}", trigger="event")
    with pytest.raises(PayloadTooLarge, match="at most 1,048,576 bytes"):
        await mist.events.enqueue("hello", b'"' + b"x" * 1024 * 1024 + b'"', trigger="event")


class GatedWorker:
    """Every invocation waits for `gate`; counts how many run at once."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.running = 0
        self.most = 0
        self.done = 0

    async def invoke(self, spec, invocation_id, payload):
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.gate.wait()
        finally:
            self.running -= 1
        self.done += 1
        return InvokeResult(ok=True, payload=payload)


async def test_async_work_runs_at_most_its_slots_of_a_function_at_once(mist):
    gated = GatedWorker()
    mist.invocations = InvocationService(mist.functions, gated, mist.records)
    mist.deploy(concurrency=2, max_instances=1)  # async_slots: 2 x min(4, 1) = 2
    await mist.dispatch()
    ids = [await mist.events.enqueue("hello", b"{}", trigger="event") for _ in range(10)]
    await asyncio.sleep(0.2)
    assert gated.running == 2
    gated.gate.set()
    for inv_id in ids:
        await mist.settled(inv_id)
    assert gated.most == 2 and gated.done == 10


async def test_a_dispatcher_that_dies_mid_attempt_is_replaced_and_the_event_runs_again(mist):
    gated = GatedWorker()
    mist.invocations = InvocationService(mist.functions, gated, mist.records)
    dead = await mist.dispatch()
    inv_id = await mist.events.enqueue("hello", b"{}", trigger="event")
    while gated.running == 0:
        await asyncio.sleep(0.005)
    for task in [dead._loop_task, dead._heartbeat_task, *dead._tasks]:  # a crash: nothing is settled
        task.cancel()
    await asyncio.sleep(0.01)
    mist.dispatcher = None
    gated.gate.set()
    await mist.dispatch(recover=True)  # the next start on the data dir
    view = await mist.settled(inv_id)
    assert [a.outcome for a in view.attempts] == ["lost", "succeeded"]
    assert view.attempts[0].error_type == "Mist.AttemptLost"


async def test_a_long_attempt_keeps_its_lease_and_is_not_run_twice(mist):
    gated = GatedWorker()
    mist.invocations = InvocationService(mist.functions, gated, mist.records)
    await mist.dispatch()
    inv_id = await mist.events.enqueue("hello", b"{}", trigger="event")
    other = Dispatcher(mist.store, mist.store, mist.events, mist.functions, mist.invocations, mist.writer,
                       DispatcherConfig(**vars(FAST)))  # fmt: skip
    await other.start()
    await asyncio.sleep(3 * FAST.lease_s)  # without renewals the lease would have run out thrice
    gated.gate.set()
    view = await mist.settled(inv_id)
    await other.stop()
    assert [a.outcome for a in view.attempts] == ["succeeded"] and gated.done == 1


async def test_stop_hands_back_events_waiting_for_a_slot(mist):
    gated = GatedWorker()
    mist.invocations = InvocationService(mist.functions, gated, mist.records)
    mist.deploy(max_instances=1)
    first = await mist.dispatch(DispatcherConfig(**{**vars(FAST), "stop_grace_s": 0.0}))
    ids = [await mist.events.enqueue("hello", b"{}", trigger="event") for _ in range(2)]
    while gated.running == 0:
        await asyncio.sleep(0.005)
    await first.stop()
    gated.gate.set()
    await mist.dispatch()  # not a recovery: the leases were handed back
    for inv_id in ids:
        assert (await mist.settled(inv_id, timeout=0.5 * FAST.lease_s)).status == "succeeded"
