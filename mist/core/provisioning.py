"""Which provisioned function versions a cluster scheduler must (re)start, and where it must stop
keeping them (pure: a snapshot and `now` in, a plan out; no I/O, no clock).

A function with `min_instances` > 0 is kept on ONE worker (`Worker.provision`: that worker's
reaper keeps the count up after crashes). In a cluster that worker can be lost; the scheduler
owning the function's shard then reconciles, the way a Kubernetes controller does: it compares
what is wanted (each provisioned version and its min_instances) with what the workers report
(their provisioned instances, per worker, in their heartbeats) and what it asked recently.

For each wanted version:

1. **Held**: some live worker reports provisioned instances of it: nothing to start (that
   worker's reaper keeps its count). If several hold it and the others already make
   min_instances, the smallest holders are **released** (told to stop provisioning it; their
   instances become ordinary warm ones, reaped when idle): the count converges, never grows.
2. **Asked**: an order is in flight, or the last one succeeded less than `settle_s` ago (the
   worker's next heartbeat has not told yet): wait.
3. **Failed**: the last `failures` orders failed (no capacity, worker unreachable): wait
   `retry_s(failures)` after the last one, doubling up to `max_retry_s`.
4. Else **provision** (where: the scheduler's placement, as for a new instance).

Versions no longer wanted (deleted, replaced by a new deploy, min_instances now 0) get nothing:
the deploy's own orders (retire every other version, provision the new one) end them.

Worked example (settle 5 s, retry 2 s doubling): at t=100 f:3 (min 1) is held by nobody (its
worker was lost at t=99) and was last asked at t=10 successfully: provision. The order is in
flight at t=101: wait. It succeeded at t=102; at t=104 no report yet: wait; at t=105 w2
reports 1 provisioned instance: held. Had the order failed at t=102 with no capacity, the next
would go at t=104, then t=108, t=116, ... (at most every `max_retry_s`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Key = tuple[str, int]  # (function id, version)


@dataclass(frozen=True, slots=True)
class ProvisionConfig:
    settle_s: float = 6.0  # after an answered order, how long its worker's report may take
    retry_s: float = 2.0  # after a failed order; doubled per consecutive failure
    max_retry_s: float = 30.0

    def validate(self) -> ProvisionConfig:
        if not 0 < self.retry_s <= self.max_retry_s or self.settle_s < 0:
            raise ValueError(f"provisioning: need 0 < retry_s <= max_retry_s and settle_s >= 0, got retry_s="
                             f"{self.retry_s}, max_retry_s={self.max_retry_s}, settle_s={self.settle_s}")
        return self


@dataclass(frozen=True, slots=True)
class Asked:
    """The last provisioning order for a version: sent at `at` (answered at `at` once `done`);
    `failures`: consecutive failed orders (0 when the last one succeeded)."""

    at: float
    done: bool = False
    failures: int = 0

    @staticmethod
    def sent(previous: Asked | None, now: float) -> Asked:
        """A new order at `now` (the failures before it still count for the backoff)."""
        return Asked(now, False, previous.failures if previous is not None else 0)

    def answered(self, ok: bool, now: float) -> Asked:
        return Asked(now, True, 0 if ok else self.failures + 1)


@dataclass(frozen=True, slots=True)
class Plan:
    provision: tuple[Key, ...] = ()  # start these (placement picks the worker)
    release: tuple[tuple[Key, str], ...] = ()  # (version, worker): that worker stops keeping it


def retry_s(failures: int, config: ProvisionConfig = ProvisionConfig()) -> float:
    """How long after the last of `failures` consecutive failed orders the next one goes."""
    return min(config.max_retry_s, config.retry_s * 2 ** max(0, failures - 1))


def reconcile(wanted: Mapping[Key, int], held: Mapping[Key, Mapping[str, int]], asked: Mapping[Key, Asked],
              now: float, config: ProvisionConfig = ProvisionConfig()) -> Plan:
    """`wanted`: min_instances per version this scheduler owns; `held`: provisioned instances
    per live worker, as reported; `asked`: the last order per version."""
    provision: list[Key] = []
    release: list[tuple[Key, str]] = []
    for key in sorted(wanted):
        holders = {w: n for w, n in held.get(key, {}).items() if n > 0}
        if holders:
            kept = 0
            for worker, n in sorted(holders.items(), key=lambda wn: (-wn[1], wn[0])):  # the largest kept
                if kept >= wanted[key]:
                    release.append((key, worker))
                kept += n
            continue
        last = asked.get(key)
        if last is not None:
            if not last.done:
                continue
            wait = config.settle_s if last.failures == 0 else retry_s(last.failures, config)
            if now - last.at < wait:
                continue
        provision.append(key)
    return Plan(tuple(provision), tuple(release))


def billable_until(spans: list[dict], cut_ms: int) -> list[dict]:
    """A cut-off worker's provisioned time, as far as it is its own to bill (pure): the cluster
    takes a worker silent for its lost timeout for lost and starts its provisioned instances on
    another, so time after `cut_ms` (its last accepted heartbeat + that timeout) is billed there.
    Spans (dicts with start_ms and end_ms, as the agent keeps them) ending by then are kept,
    those across it end at it, those starting after it are dropped.

    >>> billable_until([{"start_ms": 0, "end_ms": 5}, {"start_ms": 5, "end_ms": 20}, {"start_ms": 12, "end_ms": 15}], 10)
    [{'start_ms': 0, 'end_ms': 5}, {'start_ms': 5, 'end_ms': 10}]
    """
    return [span if span["end_ms"] <= cut_ms else {**span, "end_ms": cut_ms}
            for span in spans if span["start_ms"] < cut_ms]
