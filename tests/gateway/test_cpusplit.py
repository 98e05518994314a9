"""LoopCpuSplit (mist/gateway/cpusplit.py): what it does to the sandboxes' and the threads' CPUs
as the loop's load changes, with fakes for the Worker and the kernel's affinity calls."""

import asyncio
import threading

from mist.core.cpusplit import CpuSplitPolicy
from mist.gateway.cpusplit import LoopCpuSplit

POLICY = CpuSplitPolicy(reserve_at=0.5, release_at=0.2, hold_s=1.0)
EVERY = frozenset({0, 1, 2})


class FakeWorker:
    def __init__(self, settable: bool = True, refuse: bool = False) -> None:
        self.sandbox_cpus_settable = settable
        self.refuse = refuse
        self.sandboxes = EVERY

    def set_sandbox_cpus(self, cpus: frozenset[int]) -> None:
        if self.refuse and cpus != EVERY:
            raise PermissionError("cpuset.cpus: read-only file system")
        self.sandboxes = cpus


class Kernel:
    def __init__(self, threads: list[int]) -> None:
        self.threads = threads
        self.affinity: dict[int, frozenset[int]] = {}

    def set_affinity(self, tid: int, cpus) -> None:
        self.affinity[tid] = frozenset(cpus)


def make(worker: FakeWorker, kernel: Kernel, **kw) -> LoopCpuSplit:
    split = LoopCpuSplit(worker, policy=POLICY, cpus=EVERY, set_affinity=kernel.set_affinity,
                         threads=lambda: list(kernel.threads), clock=lambda: 0.0, **kw)
    split._loop_tid = 1  # the loop thread's id (run() reads it on the loop)
    return split


def test_a_busy_loop_keeps_the_first_cpu_and_everything_else_moves_to_the_others():
    worker, kernel = FakeWorker(), Kernel([1, 2, 3])
    split = make(worker, kernel)
    assert split.step(10.0, 0.3) and worker.sandboxes == EVERY and kernel.affinity == {}  # not busy enough
    assert split.step(11.0, 0.8)
    assert split.split.apart
    assert worker.sandboxes == {1, 2}
    assert kernel.affinity == {1: {0}, 2: {1, 2}, 3: {1, 2}}  # the loop alone on CPU 0; the writers with the sandboxes


def test_a_thread_started_while_apart_is_moved_off_the_loops_cpu_at_the_next_sample():
    worker, kernel = FakeWorker(), Kernel([1, 2])
    split = make(worker, kernel)
    split.step(10.0, 0.9)
    kernel.threads.append(7)  # a pool thread the loop started: it inherited CPU 0
    split.step(10.5, 0.9)
    assert kernel.affinity[7] == {1, 2}
    assert kernel.affinity[1] == {0}


def test_a_calm_loop_shares_every_cpu_again_after_the_hold():
    worker, kernel = FakeWorker(), Kernel([1, 2])
    split = make(worker, kernel)
    split.step(10.0, 0.9)
    split.step(10.5, 0.0)  # within the hold: stays apart
    assert worker.sandboxes == {1, 2}
    split.step(11.5, 0.0)
    assert not split.split.apart
    assert worker.sandboxes == EVERY and kernel.affinity == {1: EVERY, 2: EVERY}


def test_a_host_that_refuses_the_change_is_left_sharing_every_cpu_and_the_split_stops():
    worker, kernel = FakeWorker(refuse=True), Kernel([1, 2])
    split = make(worker, kernel)
    assert split.step(10.0, 0.9) is False
    assert not split.split.apart
    assert worker.sandboxes == EVERY and all(cpus == EVERY for cpus in kernel.affinity.values())


async def test_run_measures_the_loops_own_cpu_time_and_gives_every_cpu_back_when_cancelled():
    worker, kernel = FakeWorker(), Kernel([threading.get_native_id(), 99])
    spent = iter([0.0, 0.09, 0.18, 0.27, 0.36, 0.45])  # 0.09 s of CPU per 0.1 s sample: 90% busy
    split = LoopCpuSplit(worker, policy=POLICY, cpus=EVERY, interval_s=0.1, set_affinity=kernel.set_affinity,
                         threads=lambda: list(kernel.threads), thread_time=lambda: next(spent))
    task = asyncio.create_task(split.run())
    for _ in range(100):
        await asyncio.sleep(0.02)
        if split.split.apart:
            break
    assert split.split.apart and 0.5 < split.busy <= 1.0
    assert kernel.affinity[threading.get_native_id()] == {0}
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert worker.sandboxes == EVERY and kernel.affinity == {threading.get_native_id(): EVERY, 99: EVERY}


async def test_nothing_is_split_on_one_cpu_or_without_a_cpuset():
    for worker, cpus in ((FakeWorker(), {0}), (FakeWorker(settable=False), EVERY)):
        kernel = Kernel([1])
        split = LoopCpuSplit(worker, policy=POLICY, cpus=cpus, set_affinity=kernel.set_affinity,
                             threads=lambda: [1], thread_time=lambda: 1e9)
        await asyncio.wait_for(split.run(), 1.0)  # returns at once
        assert kernel.affinity == {}
