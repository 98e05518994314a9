"""The Worker's decisions as pure functions: placement, scale-down victims, the prewarm pool.

Each takes a snapshot and returns a decision; the Worker gathers the snapshot and applies it.

Worked example of `place` (budget 512 MB, pool of 2 sandboxes reserving 128 MB each):
function f (256 MB, concurrency 1) has one BUSY instance; 512 - 256 - 2*128 = 0 MB free.
A second call of f finds no free slot; taking a pool sandbox frees its 128 MB and needs 256,
so 128 more are needed: the other pool sandbox is evicted. Decision: start from the pool,
evict_pool=1. A third call finds no slot, no pool, no idle instance to evict: wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Literal

from mist.worker.lifecycle import State


@dataclass(frozen=True)
class InstanceView:
    id: str
    key: tuple[str, int]
    state: State
    in_flight: int
    concurrency: int
    memory_mb: int
    last_used: float  # clock reading of the last release (or of the start)
    retiring: bool = False


@dataclass(frozen=True)
class Placement:
    action: Literal["use", "start", "wait"]
    instance_id: str | None = None  # action "use"
    from_pool: bool = False  # action "start": assign a prewarmed sandbox instead of forking
    evict: tuple[str, ...] = ()  # idle instances to kill before starting
    evict_pool: int = 0  # prewarmed sandboxes to kill before starting


_SERVING = (State.IDLE, State.BUSY, State.INITIALIZING)


def place(
    key: tuple[str, int],
    memory_mb: int,
    instances: Sequence[InstanceView],
    *,
    free_mb: int,
    pool_size: int,
    pool_mb: int,
    pool_usable: bool = True,
    max_instances: int | None = None,
    starting: int = 0,
    others: Iterable[InstanceView] = (),
) -> Placement:
    """Where the next invocation of `key` runs: a free slot, a new instance, or nowhere yet.

    `instances` must hold every instance of `key` (it may hold others); `others` the rest of
    the worker's instances, iterated (once) only when the budget must be freed, so that a cold
    start costs the same with ten or a thousand warm instances of other functions.

    A free slot wins (ready instances before initializing ones, the fullest first so the others
    can idle out, then the most recently used). Otherwise a new instance if the function is
    below its `max_instances` (counting the `starting` ones) and the budget allows,
    taking a prewarmed sandbox when one is usable, after evicting prewarmed sandboxes and then
    idle instances (least recently used first) if it must. Otherwise wait.
    """
    slots = [
        i for i in instances
        if i.key == key and not i.retiring and i.state in _SERVING and i.in_flight < i.concurrency
    ]
    if slots:
        best = min(slots, key=lambda i: (i.state is State.INITIALIZING, -i.in_flight, -i.last_used))
        return Placement("use", instance_id=best.id)
    if max_instances is not None:
        live = sum(1 for i in instances if i.key == key and not i.retiring and i.state in _SERVING)
        if live + starting >= max_instances:
            return Placement("wait")
    from_pool = pool_usable and pool_size > 0
    need = memory_mb - (pool_mb if from_pool else 0)
    if free_mb >= need:
        return Placement("start", from_pool=from_pool)
    free = free_mb
    evict_pool = 0
    spare_pool = pool_size - (1 if from_pool else 0)
    while free < need and evict_pool < spare_pool:
        evict_pool += 1
        free += pool_mb
    victims: list[str] = []
    idle = sorted((i for i in chain(instances, others) if i.state is State.IDLE and i.in_flight == 0),
                  key=lambda i: i.last_used)
    for inst in idle:
        if free >= need:
            break
        victims.append(inst.id)
        free += inst.memory_mb
    if free >= need:
        return Placement("start", from_pool=from_pool, evict=tuple(victims), evict_pool=evict_pool)
    return Placement("wait")


def reclaimable(idle: Sequence[InstanceView], live: int, min_instances: int, *, now: float = 0.0,
                min_idle_s: float = 0.0) -> list[str]:
    """Which of a function's idle instances may go while keeping `min_instances` of its `live`
    instances: the least recently used go first, and none used within `min_idle_s` of `now`.

    `min_idle_s` is for a function still serving: its instances take turns being idle, and
    one used a moment ago is one its next request needs (reclaimed, it would be started again
    at once, a cold start per reclaim). With 64 callers on 64 instances and a target of 48
    (in-flight average 34 / 0.7), none goes while all 64 keep being used."""
    spare = max(0, live - min_instances)
    cold = [i for i in idle if now - i.last_used >= min_idle_s] if min_idle_s > 0 else list(idle)
    return [i.id for i in sorted(cold, key=lambda i: i.last_used)[:spare]]


def pool_deficit(target: int, have: int, *, free_mb: int, pool_mb: int, waiting: int) -> int:
    """How many prewarmed sandboxes to start now: up to the target, within the free budget,
    and none while invocations wait for budget (they come first)."""
    if waiting > 0 or pool_mb <= 0:
        return 0
    return max(0, min(target - have, free_mb // pool_mb))


def pool_target(recent_cold_starts: Sequence[int], *, minimum: int, maximum: int) -> int:
    """How many prewarmed sandboxes to keep: enough for the busiest second of recent cold
    starts (one count per second, e.g. the last 60), never fewer than `minimum` nor more than
    `maximum`. A burst of 30 cold starts grows the pool to 30 for the next minute, so a repeat
    burst is served from the pool (~1 ms each) instead of the fork path (~5-9 ms each, one
    after the other in the zygote); a quiet minute shrinks it back to `minimum`."""
    peak = max(recent_cold_starts, default=0)
    return max(minimum, min(maximum, peak))


@dataclass(frozen=True)
class OpenSpan:
    """Provisioned instances being accrued for billing: `instances` ready since `since_ms`."""

    instances: int
    since_ms: int


def accrue(open_span: OpenSpan | None, instances: int, now_ms: int) -> tuple[tuple[int, int, int] | None, OpenSpan | None]:
    """A function version's provisioned instances are `instances` from `now_ms` on: the closed
    span to bill `(instances, start_ms, end_ms)` (None when nothing accrued) and the span now open
    (None when no instance is provisioned). Called when the count changes and on every tick, so
    billed time never waits for a change; the spans of one version tile time without overlap.

    >>> accrue(OpenSpan(2, 1_000), 2, 3_000)   # a tick: bill 2 instances for 2 s, go on
    ((2, 1000, 3000), OpenSpan(instances=2, since_ms=3000))
    >>> accrue(OpenSpan(2, 3_000), 0, 3_000)   # gone within the same ms: nothing to bill
    (None, None)
    """
    closed = None
    since = now_ms
    if open_span is not None:
        since = max(now_ms, open_span.since_ms)  # a wall clock set back never bills time twice
        if since > open_span.since_ms and open_span.instances > 0:
            closed = (open_span.instances, open_span.since_ms, since)
    return closed, (OpenSpan(instances, since) if instances > 0 else None)
