"""The event loop's CPU kept apart from the sandboxes while the loop is busy.

The policy is pure (mist/core/cpusplit.py); this is its I/O. Every `interval_s` the task reads
the loop thread's CPU time (`time.thread_time`, run on the loop), decides, and on a change:
apart, the loop thread is pinned to its CPU, and the sandboxes (the Worker's cpuset group: the
zygote and all it forks) and the process's other threads (record writers, thread pools) to the
other CPUs; together again, all of them may use every CPU. While apart, threads started since
(they inherit the loop's CPU) are moved at the next sample. On stop, every CPU again.

On a host without a cpuset hierarchy (the Worker says so) or with one CPU, the task ends at once
and nothing is ever split; a host that refuses a change gets a warning, every CPU for everyone
again (best effort), and no further split.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from mist.core.cpusplit import CpuSplitPolicy, Split, cpu_list, cpus_of, decide

log = logging.getLogger(__name__)


class SandboxCpus(Protocol):
    """The Worker's side: where its sandboxes may run."""

    @property
    def sandbox_cpus_settable(self) -> bool: ...

    def set_sandbox_cpus(self, cpus: frozenset[int]) -> None: ...


def _own_threads() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return []


class LoopCpuSplit:
    def __init__(self, sandboxes: SandboxCpus, *, policy: CpuSplitPolicy | None = None, interval_s: float = 0.5,
                 cpus: Iterable[int] | None = None, clock: Callable[[], float] = time.monotonic,
                 thread_time: Callable[[], float] = time.thread_time,
                 set_affinity: Callable[[int, Iterable[int]], None] = os.sched_setaffinity,
                 threads: Callable[[], list[int]] = _own_threads) -> None:  # fmt: skip
        self._sandboxes = sandboxes
        self.policy = policy or CpuSplitPolicy()
        self.interval_s = interval_s
        self.cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
        self._clock = clock
        self._thread_time = thread_time
        self._set_affinity = set_affinity
        self._threads = threads
        self.split = Split()
        self.busy = 0.0  # the loop's busy share in the last sample
        self._moved: set[int] = set()  # threads placed while apart
        self._loop_tid = 0

    async def run(self) -> None:
        """Until cancelled; then every CPU for everyone again."""
        if len(self.cpus) < 2 or not self._sandboxes.sandbox_cpus_settable:
            return
        self._loop_tid = threading.get_native_id()
        wall, cpu = self._clock(), self._thread_time()
        try:
            while True:
                await asyncio.sleep(self.interval_s)
                now, used = self._clock(), self._thread_time()
                self.busy = (used - cpu) / (now - wall) if now > wall else 0.0
                wall, cpu = now, used
                if not self.step(now, self.busy):
                    return
        finally:
            if self.split.apart:
                self._apply(Split(False, self._clock()))

    def step(self, now: float, busy: float) -> bool:
        """One sample; False when the host refused a change (the split then stops)."""
        new = decide(self.policy, now, busy, self.split, len(self.cpus))
        if new.apart != self.split.apart:
            if not self._apply(new):
                return False
            loop_cpus, sandbox_cpus = cpus_of(self.cpus, new)
            log.info("the event loop was busy %.0f%% of the time: %s", busy * 100,
                     f"it keeps CPU {cpu_list(loop_cpus)}, the sandboxes use {cpu_list(sandbox_cpus)}"
                     if new.apart else "the sandboxes and the loop share every CPU again")
        elif new.apart:
            self._place_new_threads()
        self.split = new
        return True

    def _apply(self, split: Split) -> bool:
        loop_cpus, sandbox_cpus = cpus_of(self.cpus, split)
        try:
            self._sandboxes.set_sandbox_cpus(sandbox_cpus)
            self._moved = set()
            for tid in self._threads():
                self._set_affinity(tid, loop_cpus if tid == self._loop_tid else sandbox_cpus)
                self._moved.add(tid)
        except OSError as exc:
            log.warning("could not set the CPUs of the sandboxes and the event loop (%s): they all use every "
                        "CPU from now on", exc)
            self._undo()
            return False
        self.split = split
        return True

    def _place_new_threads(self) -> None:
        _, sandbox_cpus = cpus_of(self.cpus, self.split)
        for tid in self._threads():
            if tid not in self._moved:
                try:
                    self._set_affinity(tid, sandbox_cpus)
                except OSError:  # gone meanwhile
                    pass
                self._moved.add(tid)

    def _undo(self) -> None:
        """Best effort, after a refusal: every CPU for everyone."""
        every = frozenset(self.cpus)
        try:
            self._sandboxes.set_sandbox_cpus(every)
        except OSError:
            pass
        for tid in self._threads():
            try:
                self._set_affinity(tid, every)
            except OSError:
                pass
        self.split = Split(False, self._clock())
