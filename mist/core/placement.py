"""Cluster placement: which worker gets a new instance of a function (pure, no I/O, no clock).

A scheduler builds a `Cluster` from the workers' latest reports, asks `place(need)` for each
new instance and books each answer with `reserve`, so that decisions made before the next
reports see each other. Both are plain computation on the snapshot: no I/O, no clock.

The rules, in order:

1. **Never** a draining or unhealthy worker: they are left out of the snapshot's indexes.
2. **Fit**: free memory >= the instance's memory, free CPU >= its CPU, one free sandbox slot.
3. **Spread**: a worker already running `cap = total // workers + max_skew` instances of the
   function is *crowded* and passed over while an uncrowded worker fits (with the default
   max_skew 2 and 100 workers, a function's first 100 instances go at most 2 to a worker).
4. **Warm affinity**: among uncrowded fitting workers, the warmest wins. Warmth is a bit sum:
   the layer's zygote is running (4; it forks an instance with the dependencies imported, the
   big saving), the dependency layer is installed (2), the function's code is there (1). A
   function without dependencies (layer None) finds the base zygote everywhere: warmth 6 on
   every worker, only the code bit differs.
5. Ties: fewer instances of the function, then more free memory, then a stable order: the
   function's own probe order (its hash picks a start and a step co-prime with the worker
   count, as OpenWhisk's sharding balancer does), so two schedulers with the same snapshot
   decide the same, and different functions start on different workers.

To keep a decision cheap on 1,000 workers it does not scan them: the snapshot indexes workers
by zygote, layer and code, and a decision samples the tiers from warmest to coldest, looking at
no more than `probes` workers per tier and keeping the best of the first `choices` that fit
(the "power of d choices"). The sample's starting point rotates with the function's instance
count, so consecutive instances look at different workers. Only when every sample fails does
it scan all workers, to find the one that fits or to say precisely why none does.

Worked example: workers a, b, c, healthy, 4096 MB each; `a` runs the layer L's zygote and has
2048 MB free, `b` has L installed and 1024 MB free, `c` has nothing warm and 1024 MB free; `d` is
draining. Four 256 MB instances of f (layer L), with max_skew 1:

    >>> reports = [
    ...     WorkerReport("a", 2048, 4096, zygotes=frozenset({"L"}), layers=frozenset({"L"})),
    ...     WorkerReport("b", 1024, 4096, layers=frozenset({"L"})),
    ...     WorkerReport("c", 1024, 4096),
    ...     WorkerReport("d", 8192, 8192, state=WorkerState.DRAINING),
    ... ]
    >>> cluster = Cluster(reports, PlacementConfig(max_skew=1))
    >>> need = Need("f", memory_mb=256, code="c1", layer="L")
    >>> [cluster.reserve(cluster.place(need), need).worker for _ in range(4)]
    ['a', 'b', 'c', 'a']

The first goes to the zygote. For the second the cap is 1 // 3 + 1 = 1: `a` is crowded, and
the warmest uncrowded worker is `b` (the layer). For the third `a` and `b` are crowded, `c`
takes it though nothing is warm there. For the fourth the cap is 3 // 3 + 1 = 2: all three
are equally warm now (each started L's zygote for its instance) and run one instance each; `a`
has the most memory free. The draining `d` gets nothing, whatever it has free.

    >>> cluster.place(Need("big", memory_mb=2048, code="c2")).reason
    'no worker can take big (2048 MB, 0 mCPU): 3 healthy workers (1 draining, 0 unhealthy); no healthy worker has 2048 MB of memory free (the most is 1536 MB): add workers or deploy with less --memory'
"""

from __future__ import annotations

import enum
import math
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mist.errors import InvalidRequest


class WorkerState(enum.Enum):
    HEALTHY = "healthy"
    DRAINING = "draining"  # finishing its work, takes no new instance
    UNHEALTHY = "unhealthy"  # missed heartbeats or failed checks


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """What a worker last reported: capacity left and what it has warm."""

    id: str
    memory_free_mb: int
    memory_total_mb: int = 0  # 0: not reported (then taken as memory_free_mb)
    cpu_free_millis: int = 1_000_000  # free CPU in thousandths of a core
    free_slots: int = 1_000_000  # sandboxes it may still start (pids, uids, its own cap)
    state: WorkerState = WorkerState.HEALTHY
    code: frozenset[str] = frozenset()  # code shas extracted on the worker
    layers: frozenset[str] = frozenset()  # dependency layers installed
    zygotes: frozenset[str] = frozenset()  # layers whose layer zygote is running
    running: Mapping[str, int] = field(default_factory=dict)  # function id -> its instances there


@dataclass(frozen=True, slots=True)
class Need:
    """A new instance to place: its function, memory, CPU, code sha and dependency layer sha."""

    function: str
    memory_mb: int
    code: str
    layer: str | None = None  # None: no dependencies (the base zygote serves it)
    cpu_millis: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """Where the instance goes (`worker`), what was warm there, or why nowhere (`reason`)."""

    worker: str | None
    warm: tuple[str, ...] = ()  # of "zygote", "layer", "code"
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.worker is not None


@dataclass(frozen=True, slots=True)
class PlacementStatistics:
    healthy: int
    draining: int
    unhealthy: int
    decisions: int  # place() calls on this snapshot
    scans: int  # of which every sample failed, so all workers were looked at
    refusals: int  # of which no worker could take the instance


@dataclass(frozen=True, slots=True)
class PlacementConfig:
    max_skew: int = 2  # a worker may run total // workers + max_skew instances of one function
    choices: int = 2  # fitting candidates compared per tier (power of d choices)
    probes: int = 8  # workers looked at per tier before trying the next tier

    def validate(self) -> PlacementConfig:
        for key in ("max_skew", "choices", "probes"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise InvalidRequest(f"placement: {key} must be an integer >= 1, got {value!r}")
        if self.probes < self.choices:
            raise InvalidRequest(f"placement: probes ({self.probes}) must be >= choices ({self.choices})")
        return self


_ZYGOTE, _LAYER, _CODE = 4, 2, 1
_WARM = [tuple(name for bit, name in ((_ZYGOTE, "zygote"), (_LAYER, "layer"), (_CODE, "code")) if w & bit)
         for w in range(8)]  # warmth -> the names in Decision.warm
_GOLDEN = 0x9E3779B1  # spreads consecutive salts over the sample's starting points
_EMPTY: dict[int, int] = {}


def stable_hash(text: str) -> int:
    """A 32-bit hash that is the same in every process (Python's `hash` of a str is not)."""
    return zlib.crc32(text.encode())


class Cluster:
    """The placement snapshot: built from reports (O(workers + warm items)), then `place` and
    `reserve` per instance (O(probes) each, a scan only when the samples fail)."""

    def __init__(self, reports: Iterable[WorkerReport], config: PlacementConfig = PlacementConfig()) -> None:
        self.config = config.validate()
        self._max_skew, self._choices, self._probes = config.max_skew, config.choices, config.probes
        ordered = sorted(reports, key=lambda r: r.id)
        ids = [r.id for r in ordered]
        if len(set(ids)) != len(ids):
            raise InvalidRequest("placement: two reports have the same worker id")
        live = [r for r in ordered if r.state is WorkerState.HEALTHY]
        self.draining = sum(1 for r in ordered if r.state is WorkerState.DRAINING)
        self.unhealthy = sum(1 for r in ordered if r.state is WorkerState.UNHEALTHY)
        self.ids = [r.id for r in live]
        self.free_mb = [r.memory_free_mb for r in live]
        self.total_mb = [r.memory_total_mb or r.memory_free_mb for r in live]
        self.free_cpu = [r.cpu_free_millis for r in live]
        self.slots = [r.free_slots for r in live]
        self.code = [set(r.code) for r in live]
        self.layers = [set(r.layers) for r in live]
        self.zygotes = [set(r.zygotes) for r in live]
        self._by_code: dict[str, list[int]] = {}
        self._by_layer: dict[str, list[int]] = {}
        self._by_zygote: dict[str, list[int]] = {}
        self._running: dict[str, dict[int, int]] = {}
        self._totals: dict[str, int] = {}
        for i, r in enumerate(live):
            for sha in r.code:
                self._by_code.setdefault(sha, []).append(i)
            for sha in r.layers - r.zygotes:
                self._by_layer.setdefault(sha, []).append(i)
            for sha in r.zygotes:
                self._by_zygote.setdefault(sha, []).append(i)
            for fn, count in r.running.items():
                if count > 0:
                    self._running.setdefault(fn, {})[i] = count
                    self._totals[fn] = self._totals.get(fn, 0) + count
        n = len(live)
        self._steps = [s for s in range(1, n) if math.gcd(s, n) == 1] or [1]
        self._hashes: dict[str, int] = {}
        self._positions = {w: i for i, w in enumerate(self.ids)}
        self._all = range(n)
        self._decisions = self._scans = self._refusals = 0

    def __len__(self) -> int:
        return len(self.ids)

    def statistics(self) -> PlacementStatistics:
        return PlacementStatistics(len(self.ids), self.draining, self.unhealthy, self._decisions,
                                   self._scans, self._refusals)

    def place(self, need: Need) -> Decision:
        """The worker for one new instance of `need.function`, or why none can take it."""
        n = len(self.ids)
        self._decisions += 1
        if n == 0:
            self._refusals += 1
            return Decision(None, reason=self._reason(need))
        fn = need.function
        h = self._hashes.get(fn)
        if h is None:
            h = self._hashes[fn] = stable_hash(fn)
        total = self._totals.get(fn, 0)
        running = self._running.get(fn, _EMPTY)
        cap = total // n + self._max_skew
        salt = h + total * _GOLDEN
        if need.layer is not None:
            best = self._best(self._by_zygote.get(need.layer), salt, 1, need, running, cap)
            if best is None:
                best = self._best(self._by_layer.get(need.layer), salt, 1, need, running, cap)
            if best is not None:
                return self._decision(best, need)
        best = self._best(self._by_code.get(need.code), salt, 1, need, running, cap)
        if best is None:
            best = self._best(self._all, salt, self._steps[(h >> 8) % len(self._steps)], need, running, cap)
        if best is None:
            self._scans += 1
            best = self._scan(need, running, cap)
        if best is None:
            self._refusals += 1
            return Decision(None, reason=self._reason(need))
        return self._decision(best, need)

    def reserve(self, decision: Decision, need: Need) -> Decision:
        """Book a placement into the snapshot until the next reports: the worker's memory,
        CPU and a slot are taken, it counts one more instance of the function, and it has the
        code, the layer and the layer's zygote warm from now on (it fetches them to start the
        instance). Returns `decision`, so `reserve(place(need), need)` reads as one step."""
        if decision.worker is None:
            return decision
        i = self._positions[decision.worker]
        self.free_mb[i] -= need.memory_mb
        self.free_cpu[i] -= need.cpu_millis
        self.slots[i] -= 1
        fn = need.function
        running = self._running.get(fn)
        if running is None:
            running = self._running[fn] = {}
        running[i] = running.get(i, 0) + 1
        self._totals[fn] = self._totals.get(fn, 0) + 1
        if need.code not in self.code[i]:
            self.code[i].add(need.code)
            self._by_code.setdefault(need.code, []).append(i)
        layer = need.layer
        if layer is not None and layer not in self.zygotes[i]:
            self.layers[i].add(layer)  # its entry in the layer tier stays: the zygote tier comes first
            self.zygotes[i].add(layer)
            self._by_zygote.setdefault(layer, []).append(i)
        return decision

    def _best(self, tier: list[int] | range | None, start: int, step: int, need: Need,
              running: dict[int, int], cap: int) -> int | None:
        """The best of the first `choices` uncrowded fitting workers among `probes` of `tier`,
        visited from `start` by `step`; None if none of those fit."""
        if not tier:
            return None
        size = len(tier)
        memory, cpu, code, layer = need.memory_mb, need.cpu_millis, need.code, need.layer
        free_mb, free_cpu, slots, codes = self.free_mb, self.free_cpu, self.slots, self.code
        zygotes, layers = self.zygotes, self.layers
        best, best_key, found, choices = None, (-1, 0, 0), 0, self._choices
        for k in range(min(size, self._probes)):
            i = tier[(start + k * step) % size]
            if free_mb[i] < memory or free_cpu[i] < cpu or slots[i] <= 0:  # _fits and _warmth, inlined
                continue
            count = running.get(i, 0)
            if count >= cap:
                continue
            if layer is None or layer in zygotes[i]:
                warmth = 6
            else:
                warmth = 2 if layer in layers[i] else 0
            if code in codes[i]:
                warmth += 1
            key = (warmth, -count, free_mb[i])
            if key > best_key:
                best, best_key = i, key
            found += 1
            if found == choices:
                break
        return best

    def _fits(self, i: int, need: Need) -> bool:
        return (self.free_mb[i] >= need.memory_mb and self.free_cpu[i] >= need.cpu_millis
                and self.slots[i] > 0)

    def _warmth(self, i: int, need: Need) -> int:
        if need.layer is None or need.layer in self.zygotes[i]:
            warmth = _ZYGOTE | _LAYER
        else:
            warmth = _LAYER if need.layer in self.layers[i] else 0
        return warmth | (_CODE if need.code in self.code[i] else 0)

    def _scan(self, need: Need, running: dict[int, int], cap: int) -> int | None:
        """Every worker, when the samples found none: an uncrowded one if any fits, else a
        crowded one (fitting beats spreading); ties in id order."""
        best, best_key = None, None
        for i in range(len(self.ids)):
            if not self._fits(i, need):
                continue
            count = running.get(i, 0)
            key = (count < cap, self._warmth(i, need), -count, self.free_mb[i])
            if best_key is None or key > best_key:
                best, best_key = i, key
        return best

    def _decision(self, i: int, need: Need) -> Decision:
        return Decision(self.ids[i], warm=_WARM[self._warmth(i, need)])

    def _reason(self, need: Need) -> str:
        head = (f"no worker can take {need.function} ({need.memory_mb} MB, {need.cpu_millis} mCPU): "
                f"{len(self.ids)} healthy worker{'' if len(self.ids) == 1 else 's'} "
                f"({self.draining} draining, {self.unhealthy} unhealthy)")
        n = len(self.ids)
        if n == 0:
            return head + "; start a worker (mist worker --join URL) or wait for one to recover"
        if need.memory_mb > max(self.total_mb):
            return (head + f"; none is that big (the largest has {max(self.total_mb)} MB in all): "
                    f"add a bigger worker or deploy with less --memory")
        short = [sum(1 for i in range(n) if self.free_mb[i] < need.memory_mb),
                 sum(1 for i in range(n) if self.free_cpu[i] < need.cpu_millis),
                 sum(1 for i in range(n) if self.slots[i] <= 0)]
        if short[0] == n:
            return (head + f"; no healthy worker has {need.memory_mb} MB of memory free (the most is "
                    f"{max(self.free_mb)} MB): add workers or deploy with less --memory")
        parts = [f"{count} lack {what}" for count, what in zip(short, ("memory", "CPU", "a free sandbox slot")) if count]
        return head + "; " + ", ".join(parts) + ": add workers or wait for instances to be reclaimed"
