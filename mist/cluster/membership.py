"""Worker membership: what a worker registers and reports, where it is kept, and — pure — which
workers are healthy, late, draining or lost.

A worker registers (address, capacity, what it has warm), which gives it a new **incarnation**,
then heartbeats every `HealthPolicy.interval_s` with its load, warm set and instances. Ages are
measured on the store's clock: `MembershipStore.snapshot()` returns the rows *and* the store's
`now`, and `assess(snapshot, policy)` judges them with no clock of its own.

A worker silent for `timeout_s` is **lost**: the scheduler forgets its instances. Its heartbeat
is then refused (the store applies the same rule with the same clock), so a worker that was only
cut off re-registers as a new incarnation instead of resurrecting instances the cluster forgot.

Worked example (interval 2 s, late after 5 s, lost after 10 s): a snapshot at 12:00:20 holds
w1 (heartbeat 12:00:19), w2 (12:00:14, draining), w3 (12:00:13) and w4 (12:00:09). `assess`
answers healthy (w1), late (w3: no new placements, instances kept), draining (w2) and lost (w4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Protocol


@dataclass(frozen=True)
class Capacity:
    memory_mb: int
    cpu_millis: int  # thousandths of a core (4 cores: 4000)
    slots: int  # sandboxes it may run at once


@dataclass(frozen=True)
class Warm:
    """What a worker can start fast: extracted code, dependency layers, layer zygotes (sha256s)."""

    code: frozenset[str] = frozenset()
    layers: frozenset[str] = frozenset()
    zygotes: frozenset[str] = frozenset()


def warm_json(warm: Warm) -> dict[str, list[str]]:
    return {"code": sorted(warm.code), "layers": sorted(warm.layers), "zygotes": sorted(warm.zygotes)}


def warm_from_json(d: Mapping[str, Any]) -> Warm:
    return Warm(frozenset(d.get("code", ())), frozenset(d.get("layers", ())), frozenset(d.get("zygotes", ())))


@dataclass(frozen=True)
class Load:
    memory_used_mb: int = 0
    cpu_used_millis: int = 0  # thousandths of a core busy
    slots_used: int = 0
    inflight: int = 0  # requests being served


@dataclass(frozen=True)
class InstanceReport:
    id: str
    function: str
    version: int
    memory_mb: int
    concurrency: int
    inflight: int = 0
    provisioned: bool = False  # one of the instances the worker keeps for min_instances


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker says about itself when it registers."""

    id: str
    address: str
    capacity: Capacity
    warm: Warm = Warm()


@dataclass(frozen=True)
class Heartbeat:
    load: Load
    instances: tuple[InstanceReport, ...] = ()
    warm: Warm = Warm()


@dataclass(frozen=True)
class WorkerRecord:
    """A worker as the store knows it."""

    info: WorkerInfo
    incarnation: int
    draining: bool
    registered_at: datetime
    heartbeat_at: datetime
    load: Load = Load()
    instances: tuple[InstanceReport, ...] = ()

    @property
    def id(self) -> str:
        return self.info.id


@dataclass(frozen=True)
class MembershipSnapshot:
    now: datetime  # the store's clock when it was read
    workers: tuple[WorkerRecord, ...]


class MembershipStore(Protocol):
    def register(self, info: WorkerInfo) -> WorkerRecord:
        """Add or replace the worker: a new incarnation, not draining, no instances, heartbeat now."""

    def heartbeat(self, worker_id: str, incarnation: int, beat: Heartbeat) -> bool:
        """Record a heartbeat; False if the worker is unknown, of another incarnation or already
        lost (silent for the store's timeout): it must register again."""

    def set_draining(self, worker_id: str, draining: bool) -> bool:
        """Mark the worker draining (it gets nothing new) or not; False if unknown."""

    def leave(self, worker_id: str, incarnation: int) -> bool:
        """Remove the worker (a clean shutdown); False if unknown or of another incarnation."""

    def snapshot(self) -> MembershipSnapshot:
        """Every worker, and the store's `now` to judge them by."""


# -- pure policy -------------------------------------------------------------------------------


class Health(Enum):
    HEALTHY = "healthy"  # gets placements
    LATE = "late"  # missed heartbeats: nothing new, instances kept
    DRAINING = "draining"  # nothing new, instances kept until they end
    LOST = "lost"  # its instances are forgotten, its in-flight calls failed


@dataclass(frozen=True)
class HealthPolicy:
    interval_s: float = 2.0  # how often workers heartbeat
    late_after_s: float = 5.0  # silent this long: no new placements
    timeout_s: float = 10.0  # silent this long: lost

    def __post_init__(self) -> None:
        if not 0 < self.interval_s < self.late_after_s <= self.timeout_s:
            raise ValueError(
                "heartbeat policy: need 0 < interval_s < late_after_s <= timeout_s, got "
                f"interval_s={self.interval_s}, late_after_s={self.late_after_s}, timeout_s={self.timeout_s}"
            )


def health(worker: WorkerRecord, now: datetime, policy: HealthPolicy) -> Health:
    """Lost beats draining beats late: a draining worker that went silent is lost."""
    silent_s = (now - worker.heartbeat_at).total_seconds()
    if silent_s >= policy.timeout_s:
        return Health.LOST
    if worker.draining:
        return Health.DRAINING
    return Health.LATE if silent_s >= policy.late_after_s else Health.HEALTHY


@dataclass(frozen=True)
class Assessment:
    now: datetime
    health: Mapping[str, Health]  # worker id -> health
    incarnations: Mapping[str, int] = field(default_factory=dict)

    def having(self, state: Health) -> tuple[str, ...]:
        return tuple(sorted(w for w, h in self.health.items() if h is state))


def assess(snapshot: MembershipSnapshot, policy: HealthPolicy) -> Assessment:
    return Assessment(
        now=snapshot.now,
        health={w.id: health(w, snapshot.now, policy) for w in snapshot.workers},
        incarnations={w.id: w.incarnation for w in snapshot.workers},
    )


@dataclass(frozen=True)
class Changes:
    """What a scheduler must act on between two assessments."""

    joined: tuple[str, ...]  # new ids, or a new incarnation of a known id
    forget: tuple[str, ...]  # instances of these ids (of the previous incarnation) are gone


def changes(previous: Assessment, current: Assessment) -> Changes:
    """Workers whose instances the scheduler must forget: lost now (and not lost before), gone
    from the store, or back as a new incarnation (it restarted; its old instances are gone)."""
    joined, forget = [], []
    for wid, inc in current.incarnations.items():
        before = previous.incarnations.get(wid)
        if before != inc:
            joined.append(wid)
            if before is not None and previous.health[wid] is not Health.LOST:
                forget.append(wid)
        elif current.health[wid] is Health.LOST and previous.health[wid] is not Health.LOST:
            forget.append(wid)
    forget += [w for w in previous.incarnations if w not in current.incarnations and previous.health[w] is not Health.LOST]
    return Changes(tuple(sorted(joined)), tuple(sorted(forget)))
