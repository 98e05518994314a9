"""Which worker runs one invocation, in a cluster (pure, no I/O, no clock).

The scheduler keeps an `InstanceTable`: per worker, the instances of each function version it
runs (as last reported, plus those the table started since) and the calls in flight there. A
call goes, in order:

1. **Warm**: to a worker with an instance of the version and a free slot (instances x
   concurrency > calls in flight), the least busy such worker (ratio of busy slots), ties by id.
2. **New instance**: else to the worker `mist.core.placement.Cluster.place` picks for a new
   instance (fit, spread, warm affinity; draining, late and lost workers get nothing), booked
   with `reserve` and counted as one more instance of the version there (the worker starts it
   on the call; its next report says whether it is still there).
3. **Queue**: else, if some worker has instances of the version, to the least busy of them
   (it queues the call in its own bounded queue).
4. **Nowhere**: `Choice.worker` is None and `reason` says why.

A worker that refused a connection is `exclude`d until its next report (it may be dead: the
membership says so only after the heartbeat timeout). `update(reports)` replaces the whole
picture with the membership's assessment; `forget(worker)` drops one at once.

Worked example: w1 and w2 healthy, 1024 MB free each, f:1 has concurrency 1:

    >>> t = InstanceTable()
    >>> t.update([WorkerReport("w1", 1024), WorkerReport("w2", 1024)], {})
    >>> need = Need("f", memory_mb=128, code="c")
    >>> a = t.choose(("f", 1), need, 1); t.begin(a.worker, ("f", 1)); (a.worker, a.how)
    ('w1', 'new')
    >>> b = t.choose(("f", 1), need, 1); t.begin(b.worker, ("f", 1)); (b.worker, b.how)
    ('w2', 'new')
    >>> t.end("w1", ("f", 1)); c = t.choose(("f", 1), need, 1); (c.worker, c.how)
    ('w1', 'warm')

The second call found w1's instance busy and placement spread the new one to w2 (warm
affinity would prefer w1, which has the code, but w1 is crowded: cap 1 // 2 + 1 = 1 with
max_skew 1); the third found w1's instance free again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from mist.core.placement import Cluster, Need, PlacementConfig, WorkerReport, WorkerState

Key = tuple[str, int]  # (function id, version)


@dataclass(frozen=True, slots=True)
class Choice:
    worker: str | None
    how: str = ""  # "warm", "new", "queue"; "" when nowhere
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TableStatistics:
    workers: int
    excluded: int
    instances: int
    inflight: int
    warm: int
    new: int
    queued: int
    refused: int


class InstanceTable:
    def __init__(self, config: PlacementConfig = PlacementConfig(max_skew=1)) -> None:
        self.config = config.validate()
        self._reports: dict[str, WorkerReport] = {}
        self._instances: dict[str, dict[Key, int]] = {}  # worker -> key -> instances
        self._inflight: dict[str, dict[Key, int]] = {}  # worker -> key -> calls in flight
        self._excluded: set[str] = set()
        self._cluster: Cluster | None = None  # the placement snapshot, built on demand
        self._counts = {"warm": 0, "new": 0, "queue": 0, "refused": 0}

    def update(self, reports: Iterable[WorkerReport], instances: Mapping[str, Mapping[Key, int]]) -> None:
        """The membership's new picture: every worker's report (draining and unhealthy ones
        included, so that placement can say why it refused) and the instances each reported.
        Exclusions end (a worker that reported is reachable again); calls in flight stay."""
        self._reports = {r.id: r for r in reports}
        self._instances = {w: dict(instances.get(w, {})) for w in self._reports}
        self._excluded.clear()
        self._cluster = None

    def forget(self, worker: str) -> None:
        """Drop a lost worker: its instances and its calls in flight (failed by the caller)."""
        self._reports.pop(worker, None)
        self._instances.pop(worker, None)
        self._inflight.pop(worker, None)
        self._excluded.discard(worker)
        self._cluster = None

    def exclude(self, worker: str) -> None:
        """Send nothing to `worker` until the next `update` (it refused a connection)."""
        if worker in self._reports:
            self._excluded.add(worker)
            self._cluster = None

    def _usable(self, worker: str) -> bool:
        r = self._reports.get(worker)
        return r is not None and r.state is WorkerState.HEALTHY and worker not in self._excluded

    def choose(self, key: Key, need: Need, concurrency: int) -> Choice:
        warm = self._least_busy(key, concurrency, free_only=True)
        if warm is not None:
            self._counts["warm"] += 1
            return Choice(warm, "warm")
        cluster = self._cluster
        if cluster is None:
            cluster = self._cluster = Cluster(self._placement_reports(), self.config)
        decision = cluster.place(need)
        if decision.worker is not None:
            cluster.reserve(decision, need)
            counts = self._instances.setdefault(decision.worker, {})
            counts[key] = counts.get(key, 0) + 1
            self._counts["new"] += 1
            return Choice(decision.worker, "new")
        queued = self._least_busy(key, concurrency, free_only=False)
        if queued is not None:
            self._counts["queue"] += 1
            return Choice(queued, "queue")
        self._counts["refused"] += 1
        return Choice(None, reason=decision.reason)

    def _least_busy(self, key: Key, concurrency: int, *, free_only: bool) -> str | None:
        best, best_ratio = None, None
        for worker, counts in self._instances.items():
            n = counts.get(key, 0)
            if n <= 0 or not self._usable(worker):
                continue
            busy = self._inflight.get(worker, {}).get(key, 0)
            slots = n * max(1, concurrency)
            if free_only and busy >= slots:
                continue
            ratio = busy / slots
            if best_ratio is None or ratio < best_ratio or (ratio == best_ratio and worker < best):
                best, best_ratio = worker, ratio
        return best

    def _placement_reports(self) -> list[WorkerReport]:
        out = []
        for worker, report in self._reports.items():
            running: dict[str, int] = {}
            for (fn, _version), n in self._instances.get(worker, {}).items():
                running[fn] = running.get(fn, 0) + n
            state = WorkerState.UNHEALTHY if worker in self._excluded else report.state
            out.append(replace(report, running=running, state=state))
        return out

    def begin(self, worker: str, key: Key) -> None:
        calls = self._inflight.setdefault(worker, {})
        calls[key] = calls.get(key, 0) + 1

    def end(self, worker: str, key: Key) -> None:
        calls = self._inflight.get(worker)
        if calls is None or key not in calls:
            return  # forgotten meanwhile
        calls[key] -= 1
        if calls[key] <= 0:
            del calls[key]

    def inflight(self, worker: str) -> int:
        return sum(self._inflight.get(worker, {}).values())

    def workers(self) -> list[str]:
        return sorted(self._reports)

    def healthy(self) -> list[str]:
        return sorted(w for w in self._reports if self._usable(w))

    def statistics(self) -> TableStatistics:
        c = self._counts
        return TableStatistics(
            workers=len(self._reports), excluded=len(self._excluded),
            instances=sum(sum(v.values()) for v in self._instances.values()),
            inflight=sum(sum(v.values()) for v in self._inflight.values()),
            warm=c["warm"], new=c["new"], queued=c["queue"], refused=c["refused"],
        )
