import asyncio
import threading

import pytest

from mist.control.batching import GroupCommit, SerialWriter


@pytest.fixture
def writer():
    w = SerialWriter()
    yield w
    w.close()


async def test_items_submitted_while_a_batch_is_written_share_the_next_batch(writer):
    release = threading.Event()
    batches: list[list[int]] = []

    def write(items):
        if not batches:
            release.wait(5)  # the first batch is slow: the others pile up meanwhile
        batches.append(list(items))
        return [i * 10 for i in items]

    commit = GroupCommit(write, writer)
    first = asyncio.create_task(commit.submit(1))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(commit.submit(i)) for i in range(2, 6)]
    await asyncio.sleep(0.05)
    release.set()
    assert await first == 10 and await asyncio.gather(*rest) == [20, 30, 40, 50]
    assert batches == [[1], [2, 3, 4, 5]] and commit.batches == 2


async def test_a_failed_batch_fails_each_of_its_callers_and_the_next_batch_still_runs(writer):
    def write(items):
        if "bad" in items:
            raise RuntimeError("database is locked")
        return list(items)

    commit = GroupCommit(write, writer)
    results = await asyncio.gather(commit.submit("bad"), commit.submit("ok"), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError, RuntimeError]  # one batch
    assert await commit.submit("fine") == "fine"


async def test_batches_are_at_most_max_batch(writer):
    sizes: list[int] = []

    def write(items):
        sizes.append(len(items))
        return list(items)

    commit = GroupCommit(write, writer, max_batch=3)
    assert await asyncio.gather(*(commit.submit(i) for i in range(7))) == list(range(7))
    assert max(sizes) == 3 and sum(sizes) == 7


async def test_the_writer_runs_one_call_at_a_time(writer):
    running = {"now": 0, "most": 0}
    lock = threading.Lock()

    def work():
        with lock:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        threading.Event().wait(0.01)
        with lock:
            running["now"] -= 1

    await asyncio.gather(*(writer.run(work) for _ in range(5)))
    assert running["most"] == 1
