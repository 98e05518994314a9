"""The outbox's Wakeup: what wakes the S3 trigger loop, and what that loop's stop() relies on."""

import asyncio

from mist.s3.outbox import Wakeup


async def test_a_notify_from_another_thread_wakes_the_waiter():
    w = Wakeup()
    assert await w.wait(0.01)  # the first wait returns at once: a commit may have come before
    waiting = asyncio.create_task(w.wait(5.0))
    await asyncio.sleep(0)
    await asyncio.to_thread(w.notify)
    assert await asyncio.wait_for(waiting, 2.0) is True
    assert await w.wait(0.01) is False  # woken once per notify: nothing since


async def test_a_waiter_cancelled_just_as_it_is_woken_ends_cancelled():
    """asyncio.wait_for (3.11) returns the result when the cancellation and the wake-up meet, so
    a loop cancelled by stop() went on waiting, and stop() with it, forever."""
    w = Wakeup()
    await w.wait(0.01)
    waiting = asyncio.create_task(w.wait(5.0))
    await asyncio.sleep(0)  # now asleep on the event
    w._event.set()  # woken (as notify's call_soon_threadsafe does on the loop)...
    waiting.cancel()  # ...and cancelled in the same turn of the loop
    done, _ = await asyncio.wait({waiting}, timeout=2.0)
    assert done and waiting.cancelled()
