"""Writes to other processes made in one turn of the event loop, sent together at its end.

Every write to a socket whose reader sleeps wakes that reader: the gateway's answer wakes the
client, its INVOKE frame wakes the sandbox. A wake-up is the costly part of such a small write,
on a virtual machine most of all (an idle vCPU is woken with an inter-processor interrupt, which
the hypervisor has to deliver). Under load the gateway answers several invocations and sends
several INVOKE frames in each turn of its loop; written as each is ready, with the loop's
Python work between them, every write finds its reader asleep again. Held to the end of the
turn and sent back to back, the first wakes the reader's CPU and the rest find it awake.

Writes are held only while other invocations are in flight (`busy`): a lone request is
answered at once, without waiting for the turn to end.

A writer (a `Burstable`) keeps what it was given, in order, and writes it when `flush` is
called; it must also flush before it closes, so nothing it held is lost or reordered.
Measured under `wrk -c64` on the invocation route: docs/benchmarks.md ("Writes in bursts").
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger(__name__)


class Burstable(Protocol):
    def flush(self) -> None:
        """Write everything held, in order."""


class WriteBurst:
    """One per event loop (`for_loop`): counts the invocations in flight on the loop (the
    Worker keeps `calls`), and flushes the writers that held their data when the turn ends."""

    __slots__ = ("_loop", "_held", "calls")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._held: list[Burstable] = []
        self.calls = 0  # invocations in flight (Worker.invoke, from start to end)

    def busy(self, own: int) -> bool:
        """More invocations in flight than the caller's `own` (1 while its invocation runs, 0
        for its answer, written after): other writes are likely in this turn, so hold."""
        return self.calls > own

    def hold(self, writer: Burstable) -> None:
        """`writer` holds data: flush it at the end of this turn (call once per turn)."""
        if not self._held:
            self._loop.call_soon(self._end_of_turn)
        self._held.append(writer)

    def _end_of_turn(self) -> None:
        held, self._held = self._held, []
        for writer in held:
            try:
                writer.flush()
            except Exception:  # one writer's failure must not keep the others' data back
                log.exception("flushing %r failed", writer)


_BURSTS: dict[asyncio.AbstractEventLoop, WriteBurst] = {}


def for_loop(loop: asyncio.AbstractEventLoop) -> WriteBurst:
    """The loop's WriteBurst (made at first use; dropped when the loop is closed)."""
    burst = _BURSTS.get(loop)
    if burst is None:
        for old in [lp for lp in _BURSTS if lp.is_closed()]:
            del _BURSTS[old]
        burst = _BURSTS[loop] = WriteBurst(loop)
    return burst
