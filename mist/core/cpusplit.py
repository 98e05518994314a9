"""Whether the gateway's event loop gets a CPU of its own: pure policy.

`mist up` serves every invocation on one event loop thread, and the sandboxes run on the same
machine. While the loop is busy, a sandbox woken on the loop's CPU takes that CPU from it and
evicts its caches: under `wrk -c64` on 2 vCPUs, the loop on a CPU apart and the sandboxes on the
other served ~25% more invocations per second, each costing the loop ~10% less CPU
(docs/benchmarks.md). Kept apart always, though, the functions would lose a CPU even when the
gateway has little to do. So the split follows the loop's load: once its busy share of a CPU
(CPU time / wall time over one sample) reaches `reserve_at`, the loop is pinned to one CPU (the
first: in A/B runs it served 3-6% more there than on the last) and the sandboxes to the others;
once it falls to `release_at` or below, both may use every CPU again. Each change holds for at
least `hold_s`, so a load near a threshold does not flap. A machine with one CPU never splits.

    decide(policy, now, busy, current, cpus) -> Split
    cpus_of(all_cpus, split) -> (the loop's CPUs, the sandboxes' CPUs)
"""

from __future__ import annotations

import math
from itertools import groupby
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuSplitPolicy:
    reserve_at: float = 0.5  # the loop's busy share of one CPU at which it gets a CPU apart
    release_at: float = 0.2  # at or below this, everything shares every CPU again
    hold_s: float = 5.0  # after a change, none back before this

    def __post_init__(self) -> None:
        if not 0 <= self.release_at < self.reserve_at <= 1:
            raise ValueError(f"need 0 <= release_at < reserve_at <= 1, got {self.release_at} and {self.reserve_at}")


@dataclass(frozen=True)
class Split:
    apart: bool = False  # the loop on a CPU of its own, the sandboxes on the others
    since: float = -math.inf  # when it last changed


def decide(policy: CpuSplitPolicy, now: float, busy: float, current: Split, cpus: int) -> Split:
    """The split after a sample in which the loop was busy `busy` of the time (0..1)."""
    if cpus < 2:
        return current if not current.apart else Split(False, now)
    if now - current.since < policy.hold_s:
        return current
    if not current.apart and busy >= policy.reserve_at:
        return Split(True, now)
    if current.apart and busy <= policy.release_at:
        return Split(False, now)
    return current


def cpus_of(all_cpus: Sequence[int], split: Split) -> tuple[frozenset[int], frozenset[int]]:
    """(the loop's CPUs, the sandboxes' CPUs): apart, the loop takes the first CPU alone."""
    every = frozenset(all_cpus)
    if not split.apart or len(every) < 2:
        return every, every
    mine = min(every)
    return frozenset({mine}), every - {mine}


def cpu_list(cpus: Iterable[int]) -> str:
    """A cpuset list: [0, 1, 2, 5] -> "0-2,5"."""
    out: list[str] = []
    for _, run in groupby(enumerate(sorted(set(cpus))), key=lambda pair: pair[1] - pair[0]):  # consecutive CPUs
        first, *rest = [cpu for _, cpu in run]
        out.append(f"{first}-{rest[-1]}" if rest else str(first))
    return ",".join(out)
