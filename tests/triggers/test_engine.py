"""The shared connector machinery: the local queue, id uniqueness, Deliver's answers, errors."""

import asyncio
import json

from mist.errors import FunctionError
from mist.triggers.connectors import Message
from mist.triggers.connectors._engine import LocalQueue, describe, failures_of, unique_ids
from mist.triggers.deliver import batch_deliverer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def msg(id: str, body: bytes = b"x") -> Message:
    return Message(id, body, {}, "memory://local?queue=q", 1, 0.0)


async def test_the_local_queue_hands_out_in_order_and_holds_delayed_items_until_due():
    clock = Clock()
    q: LocalQueue[str] = LocalQueue(clock)
    q.put("a")
    q.put_later("late", 5.0)
    q.put("b")
    assert await q.take(10, 0) == ["a", "b"]
    assert await q.take(10, 0) == [] and len(q) == 1
    clock.now += 5.0
    assert await q.take(10, 0) == ["late"]


async def test_a_waiting_take_wakes_when_an_item_arrives():
    q: LocalQueue[str] = LocalQueue()
    waiter = asyncio.create_task(q.take(5, 10.0))
    await asyncio.sleep(0.01)
    q.put("a")
    assert await asyncio.wait_for(waiter, 1.0) == ["a"]


async def test_take_returns_at_most_max_n_and_empty_after_its_timeout():
    q: LocalQueue[int] = LocalQueue()
    for i in range(5):
        q.put(i)
    assert await q.take(2, 0) == [0, 1]
    assert await q.take(10, 0) == [2, 3, 4]
    assert await q.take(10, 0.02) == []


def test_repeated_ids_in_a_batch_are_made_unique():
    batch = unique_ids([msg("a"), msg("b"), msg("a"), msg("a")])
    assert [m.id for m in batch] == ["a", "b", "a#2", "a#3"]


def test_deliver_may_answer_a_set_a_dict_or_nothing_and_unknown_ids_are_ignored():
    batch = [msg("a"), msg("b")]
    assert failures_of(None, batch) == {} and failures_of(set(), batch) == {}
    assert failures_of({"b", "zz"}, batch) == {"b": "the function listed this message in batchItemFailures"}
    assert failures_of({"a": "bad total"}, batch) == {"a": "bad total"}


def test_errors_are_described_in_one_line_with_their_type():
    assert describe(ValueError("no")) == "ValueError: no"
    assert describe(FunctionError("Sandbox.Timedout", "Task timed out after 3.00 seconds")) == \
        "Sandbox.Timedout: Task timed out after 3.00 seconds"
    assert describe(ExceptionGroup("g", [ConnectionError("reset")])) == "ConnectionError: reset"


async def test_batch_deliverer_invokes_once_per_batch_and_reads_batch_item_failures():
    seen: list[dict] = []

    async def invoke(payload: bytes) -> bytes:
        event = json.loads(payload)
        seen.append(event)
        return json.dumps({"batchItemFailures": [{"itemIdentifier": event["Records"][1]["messageId"]}]}).encode()

    failed = await batch_deliverer(invoke)([msg("a", b"1"), msg("b", b"2")])
    assert failed == {"b"}
    assert [r["body"] for r in seen[0]["Records"]] == ["1", "2"]


async def test_batch_deliverer_fails_the_whole_batch_on_a_result_that_is_not_json():
    async def invoke(payload: bytes) -> bytes:
        return b"not json"

    assert await batch_deliverer(invoke)([msg("a"), msg("b")]) == {"a", "b"}


async def test_batch_deliverer_sends_cloudevents_when_asked():
    events: list = []

    async def invoke(payload: bytes) -> bytes:
        events.append(json.loads(payload))
        return b"null"

    assert await batch_deliverer(invoke, "cloudevents")([msg("a")]) == set()
    assert events[0][0]["id"] == "a" and events[0][0]["specversion"] == "1.0"
