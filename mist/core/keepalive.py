"""KeepAlivePolicy: when an idle function is unloaded, prewarmed and kept loaded, learned online.

Each time a function goes idle (its last in-flight invocation finished) a policy decides, from that
function's own history and nothing else, two durations:

    idle ──── prewarm_delay_s (unloaded) ────┬──── keepalive_s (loaded) ────┬── unloaded ──▶
                                           load                          unload

An invocation arriving while the function is loaded (or still executing) is warm; one arriving
during the delay or after the unload is a cold start. Policies are pure: no clock reads, no I/O;
the caller passes `now` and the observation, and keeps the state object (small, immutable, cheap to
hold for thousands of functions). The same code drives the simulator (`mist.sim`) and the worker.

The contract, in event order:

    state = policy.initial_state(spec)                    # a function is deployed
    state = policy.on_arrival(spec, state, now, idle_s)   # an invocation arrives, none in flight
    decision, state = policy.on_idle(spec, state, now)    # the last in-flight invocation finished

`idle_s` is how long the function was idle (seconds since the `on_idle` before it), None for its
first invocation. Invocations arriving while one is in flight are not reported: they neither end
nor start an idle period.

The policies: `FixedKeepAlive` (the state of the practice), `HybridHistogram` (Shahrad et al.,
"Serverless in the Wild", USENIX ATC 2020) and `MistKeepAlive` (mist's default). docs/keepalive.md
has the model, the design of each and their results on the Azure Functions 2019 trace.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import accumulate
from typing import Any, Protocol

from mist.errors import InvalidRequest

HOUR = 3600.0
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """What a policy may know about a function besides its history."""

    memory_mb: float


@dataclass(frozen=True, slots=True)
class Decision:
    """Stay unloaded `prewarm_delay_s` after going idle, then loaded `keepalive_s` (inf: forever)."""

    prewarm_delay_s: float
    keepalive_s: float


class KeepAlivePolicy(Protocol):
    name: str

    def initial_state(self, spec: FunctionSpec) -> Any: ...

    def on_arrival(self, spec: FunctionSpec, state: Any, now: float, idle_s: float | None) -> Any: ...

    def on_idle(self, spec: FunctionSpec, state: Any, now: float) -> tuple[Decision, Any]: ...


# -- fixed ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FixedKeepAlive:
    """Keep every function loaded `keepalive_s` after it goes idle; never prewarm (AWS: 10 min)."""

    keepalive_s: float

    @property
    def name(self) -> str:
        return f"fixed:{self.keepalive_s / 60:g}"

    def initial_state(self, spec: FunctionSpec) -> None:
        return None

    def on_arrival(self, spec: FunctionSpec, state: None, now: float, idle_s: float | None) -> None:
        return None

    def on_idle(self, spec: FunctionSpec, state: None, now: float) -> tuple[Decision, None]:
        return Decision(0.0, self.keepalive_s), None


# -- hybrid histogram (Shahrad et al. 2020) -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistogramState:
    bins: tuple[tuple[int, int], ...] = ()  # (minute bin, count), sorted; only non-empty bins
    in_range: int = 0  # idle times that fell in a bin
    out_of_range: int = 0  # idle times longer than the histogram's range
    sum_sq: int = 0  # sum of squared bin counts, for the coefficient of variation
    recent: tuple[float, ...] = ()  # the last idle times, oldest first, for the forecaster


@dataclass(frozen=True)
class HybridHistogram:
    """The hybrid histogram policy of Shahrad et al., "Serverless in the Wild" (USENIX ATC 2020).

    Idle times go in 1-minute bins over 4 hours. If at least half of them were longer than that,
    a time-series forecast f of the next idle time decides: prewarm at 0.85 f, keep loaded until
    1.15 f (the paper's ARIMA with a 15 % margin; here an AR(1) fit, `forecast_next`). Otherwise,
    if the histogram is representative (coefficient of variation of the bin counts >= 2), prewarm
    at the 5th percentile minus 10 % and keep loaded for the 99th percentile plus 10 % (counted
    from the prewarm, as the paper draws it). Otherwise keep loaded for the range (4 h), no
    prewarm. A single idle time always looks like a perfect pattern (CV 15.5), so the histogram
    is trusted from two on; the paper leaves this unsaid.

    Worked example: idle times 10, 10, 10, 11 minutes fill bins 10 (3) and 11 (1); CV = 12.2.
    Head (5th percentile) is bin 10, tail (99th) bin 11: prewarm 10 min x 0.9 = 540 s, keep
    loaded (11 + 1) min x 1.1 = 792 s, so loaded from 540 s to 1332 s after going idle.
    """

    range_s: float = 4 * HOUR
    bin_s: float = 60.0
    head: float = 0.05
    tail: float = 0.99
    margin: float = 0.10
    cv_threshold: float = 2.0
    out_of_range_threshold: float = 0.5
    forecast_margin: float = 0.15
    min_samples: int = 2
    forecast_window: int = 16
    name: str = "hybrid-histogram"

    def initial_state(self, spec: FunctionSpec) -> HistogramState:
        return HistogramState()

    def on_arrival(
        self, spec: FunctionSpec, state: HistogramState, now: float, idle_s: float | None
    ) -> HistogramState:
        if idle_s is None:
            return state
        recent = (*state.recent, idle_s)[-self.forecast_window :]
        b = int(idle_s // self.bin_s)
        if b >= round(self.range_s / self.bin_s):
            return replace(state, out_of_range=state.out_of_range + 1, recent=recent)
        counts = dict(state.bins)
        old = counts.get(b, 0)
        counts[b] = old + 1
        return replace(
            state,
            bins=tuple(sorted(counts.items())),
            in_range=state.in_range + 1,
            sum_sq=state.sum_sq + 2 * old + 1,
            recent=recent,
        )

    def on_idle(self, spec: FunctionSpec, state: HistogramState, now: float) -> tuple[Decision, HistogramState]:
        total = state.in_range + state.out_of_range
        if total < self.min_samples:
            return Decision(0.0, self.range_s), state
        if state.out_of_range / total >= self.out_of_range_threshold:
            f = forecast_next(state.recent)
            return Decision(f * (1 - self.forecast_margin), 2 * self.forecast_margin * f), state
        if self.cv(state) < self.cv_threshold:
            return Decision(0.0, self.range_s), state
        bins = [b for b, _ in state.bins]
        cum = list(accumulate(c for _, c in state.bins))
        head = bins[_first_at_least(cum, self.head * state.in_range)]
        tail = bins[_first_at_least(cum, self.tail * state.in_range)]
        prewarm = head * self.bin_s * (1 - self.margin)
        return Decision(prewarm, (tail + 1) * self.bin_s * (1 + self.margin)), state

    def cv(self, state: HistogramState) -> float:
        """Coefficient of variation of the counts of all bins (empty ones included)."""
        k = round(self.range_s / self.bin_s)
        if state.in_range == 0:
            return 0.0
        mean = state.in_range / k
        var = max(0.0, (state.sum_sq - k * mean * mean) / (k - 1))
        return math.sqrt(var) / mean


def _first_at_least(cum: Sequence[int], target: float) -> int:
    for i, c in enumerate(cum):
        if c >= target - 1e-9:
            return i
    return len(cum) - 1


def forecast_next(xs: Sequence[float]) -> float:
    """AR(1) forecast of the next value (ARIMA(1,0,0), Yule-Walker fit); the last value if < 3.

    >>> forecast_next([100.0, 300.0, 100.0, 300.0])   # alternating: phi = -0.75
    125.0
    """
    if len(xs) < 3:
        return xs[-1]
    mu = sum(xs) / len(xs)
    var = sum((x - mu) ** 2 for x in xs)
    if var == 0:
        return mu
    phi = sum((a - mu) * (b - mu) for a, b in zip(xs, xs[1:])) / var
    phi = max(-0.95, min(0.95, phi))
    return max(0.0, mu + phi * (xs[-1] - mu))


# -- mist ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MistConfig:
    """The knobs of `MistKeepAlive`, with their defaults (docs/keepalive.md explains each)."""

    cold_start_cost_gb_s: float = 2200.0  # memory we'd keep idle to save one cold start
    history: int = 256  # idle times remembered per function
    context_max: int = 16  # longest run of recent idle times matched against the history
    context_min_matches: int = 2  # matches needed to trust a context
    context_bucket_ratio: float = 1.25  # idle times within this ratio are "the same" in a context
    tail_alpha: float = 0.5  # Pareto exponent of idle times longer than any seen
    margin_rel: float = 0.10  # each window widened by this fraction of its edge...
    margin_abs_s: float = 5.0  # ...and at least this much
    min_prewarm_s: float = 5.0  # shorter delays are not worth an unload: stay loaded
    horizon_s: float = DAY  # nothing is planned beyond this

    def validate(self) -> MistConfig:
        checks = [
            ("cold_start_cost_gb_s", self.cold_start_cost_gb_s > 0, "> 0"),
            ("history", self.history >= 2, ">= 2"),
            ("context_max", self.context_max >= 1, ">= 1"),
            ("context_min_matches", self.context_min_matches >= 1, ">= 1"),
            ("context_bucket_ratio", self.context_bucket_ratio > 1, "> 1"),
            ("tail_alpha", self.tail_alpha > 0, "> 0"),
            ("margin_rel", 0 <= self.margin_rel < 1, "in [0, 1)"),
            ("margin_abs_s", self.margin_abs_s >= 0, ">= 0"),
            ("min_prewarm_s", self.min_prewarm_s >= 0, ">= 0"),
            ("horizon_s", self.horizon_s > 0, "> 0"),
        ]
        for key, ok, rule in checks:
            if not ok:
                raise InvalidRequest(f"keep-alive config {key}={getattr(self, key)!r} is invalid: must be {rule}")
        return self


_GRID = math.log(1.02)  # idle times are kept as 2 % wide buckets: x in bucket k <=> 1.02**k <= 1 + x < 1.02**(k+1)


def _bucket(x: float) -> int:
    return int(math.log1p(x) / _GRID) if x > 0 else 0


def _edge(k: int) -> float:
    """Lower edge of bucket k (the upper edge of k - 1), in seconds."""
    return math.expm1(k * _GRID)


@lru_cache(maxsize=4096)
def _pareto_tail(hi: int, alpha: float, horizon_s: float) -> tuple[tuple[int, float], ...]:
    """(bucket, probability) of an idle time beyond bucket `hi`, Pareto(alpha), in doubling slices."""
    start = x = _edge(hi)
    out = []
    while x < horizon_s:
        out.append((_bucket(x * math.sqrt(2)), (start / x) ** alpha - (start / (2 * x)) ** alpha))
        x *= 2
    return tuple(out)


@lru_cache(maxsize=4096)
def _below(lo: int, hi: int, n: int) -> tuple[int, ...]:
    """Eight buckets spread over about four sample spacings (hi / (n + 1)) below bucket `lo`."""
    low = _edge(lo)
    span = min(low, 4 * _edge(hi) / (n + 1))
    return tuple(_bucket(low - span * (2 * i + 1) / 16) for i in range(8))


@dataclass(frozen=True, slots=True)
class MistState:
    buckets: tuple[int, ...] = ()  # the last `history` idle times (as 2 % buckets), oldest first
    symbols: str = ""  # the same, one letter each in coarse buckets, for context matching
    counts: tuple[tuple[int, int], ...] = ()  # (bucket, how many of `buckets`), sorted
    predicted: tuple[int, int] | None = None  # bucket range the context predicted at the last on_idle
    hits: int = 0  # context predictions the next idle time fell in...
    misses: int = 0  # ...and outside


class MistKeepAlive:
    """mist's policy: the window that minimises expected cost under a learned idle-time forecast.

    1. Forecast. The next idle time is predicted as a distribution, from the function's last
       `history` idle times. If the most recent idle times (a context of up to 16, compared in
       25 % wide buckets) occurred before, what followed them is the forecast, trusted as much as
       such predictions came true so far ((hits + 1) / (hits + misses + 2)). The rest of the weight
       goes to all remembered idle times plus two unseen ones (rule of succession): one shorter
       than the shortest seen, one longer than the longest, the latter Pareto(alpha) distributed.
    2. Decide. A cold start is worth `cold_start_cost_gb_s` of idle memory (GB x s). Loading over
       [a, b] after going idle costs memory x E[time loaded before the next arrival] and saves a
       cold start for each idle time in [a, b]. The best [a, b] over the forecast's points is a
       maximum-sum segment (`best_window`, linear time). It is then widened by the margins.

    Consequences: a function with little history is kept loaded (its unseen tails weigh a lot), for
    about cost x alpha / memory seconds (ski rental); a periodic function is prewarmed just before
    its period; a large function is kept loaded for less time than a small one.

    Worked example (defaults: cost 2200 GB-s; a 1024 MB function that was idle 60 s thirty
    times): the context "60, 60, ..." was followed by 60 s each time it was checked (27 hits,
    trust 28/29), so the forecast puts 99.8 % on the 60 s bucket [59.3, 60.5). Starting earlier
    would cost about 1 GB x 59 s per idle period to save 0.1 % of a cold start; beyond 60.5 s only
    the unseen tail is left, worth covering while its hazard alpha / t exceeds memory / cost (to
    about 1400 s, in doubling slices). With the margins (10 %, at least 5 s): unloaded 53.4 s,
    then loaded 1461 s. The next arrival, at 60 s, is warm after 6.6 s of idle memory.
    """

    name = "mist"

    def __init__(self, config: MistConfig | None = None) -> None:
        self.config = (config or MistConfig()).validate()
        self._coarse = _GRID / math.log(self.config.context_bucket_ratio)

    def initial_state(self, spec: FunctionSpec) -> MistState:
        return MistState()

    def on_arrival(self, spec: FunctionSpec, state: MistState, now: float, idle_s: float | None) -> MistState:
        if idle_s is None:
            return state
        cfg = self.config
        hits, misses = state.hits, state.misses
        if state.predicted is not None:
            lo, hi = _edge(state.predicted[0]), _edge(state.predicted[1] + 1)
            if lo * (1 - cfg.margin_rel) - cfg.margin_abs_s <= idle_s <= hi * (1 + cfg.margin_rel) + cfg.margin_abs_s:
                hits += 1
            else:
                misses += 1
            if hits + misses > 2 * cfg.history:  # forget slowly: the old track record counts half
                hits, misses = hits // 2, misses // 2
        k = _bucket(idle_s)
        counts = dict(state.counts)
        counts[k] = counts.get(k, 0) + 1
        buckets = (*state.buckets, k)
        symbols = state.symbols + chr(48 + min(200, int(k * self._coarse)))
        if len(buckets) > cfg.history:
            gone = buckets[0]
            counts[gone] -= 1
            if not counts[gone]:
                del counts[gone]
            buckets, symbols = buckets[1:], symbols[1:]
        return MistState(buckets, symbols, tuple(sorted(counts.items())), None, hits, misses)

    def on_idle(self, spec: FunctionSpec, state: MistState, now: float) -> tuple[Decision, MistState]:
        cfg = self.config
        weights: dict[int, float] = {}
        follow = self.context_forecast(state)
        rest = 1.0
        if follow:
            trust = (state.hits + 1) / (state.hits + state.misses + 2)
            share = trust / len(follow)
            for k in follow:
                weights[k] = weights.get(k, 0.0) + share
            rest = 1.0 - trust
        self._add_history(weights, state, rest)
        points = sorted(weights.items())
        i, j = best_window([_edge(k) for k, _ in points], [w for _, w in points],
                           cfg.cold_start_cost_gb_s, spec.memory_mb / 1024)
        start, end = _edge(points[i][0]), _edge(points[j][0] + 1)
        start = max(0.0, start - max(cfg.margin_abs_s, cfg.margin_rel * start))
        end += max(cfg.margin_abs_s, cfg.margin_rel * end)
        if start < cfg.min_prewarm_s:
            start = 0.0
        predicted = (min(follow), max(follow)) if follow else None
        return Decision(start, end - start), replace(state, predicted=predicted)

    def context_forecast(self, state: MistState) -> list[int]:
        """Buckets of the idle times that followed the longest recent context seen before (at most
        the 32 newest), or [] if no context of up to `context_max` occurred `context_min_matches` times."""
        cfg, s, n = self.config, state.symbols, len(state.symbols)
        for length in range(min(cfg.context_max, n - 1), 0, -1):
            suffix = s[n - length :]
            found: list[int] = []
            end = n - 1  # an occurrence must be followed by an idle time
            while len(found) < 32:
                p = s.rfind(suffix, 0, end)
                if p < 0:
                    break
                found.append(state.buckets[p + length])
                end = p + length - 1
            if len(found) >= cfg.context_min_matches:
                return found
        return []

    def _add_history(self, weights: dict[int, float], state: MistState, mass: float) -> None:
        """Spread `mass` over the remembered idle times and two unseen ones (rule of succession)."""
        cfg = self.config
        n = len(state.buckets)
        unit = mass / (n + 2)
        for k, c in state.counts:
            weights[k] = weights.get(k, 0.0) + c * unit
        if n:
            lo, hi = state.counts[0][0], state.counts[-1][0] + 1
            for k in _below(lo, hi, n):
                weights[k] = weights.get(k, 0.0) + unit / 8
        else:
            hi = _bucket(1.0)
            unit *= 2  # nothing seen yet: both unseen idle times are "longer than 1 s"
        for k, p in _pareto_tail(hi, cfg.tail_alpha, cfg.horizon_s):
            weights[k] = weights.get(k, 0.0) + unit * p


def best_window(xs: Sequence[float], ws: Sequence[float], cold_cost: float, memory_gb: float) -> tuple[int, int]:
    """The loaded window [xs[i], xs[j]] of least expected cost, over sorted points xs of weight ws.

    Cost = cold_cost x (weight outside the window) + memory_gb x E[loaded idle seconds], where an
    arrival at x in the window wastes x - xs[i] and one after it wastes xs[j] - xs[i]. Extending
    the window from xs[k] to xs[k+1] saves cold_cost x ws[k+1] and costs memory_gb x (weight
    beyond xs[k]) x (xs[k+1] - xs[k]), whatever the window's start: so the best window is a
    maximum-sum segment, found in one pass (Kadane).

    >>> best_window([10.0, 20.0, 1000.0], [0.45, 0.45, 0.1], cold_cost=100.0, memory_gb=1.0)
    (0, 1)
    """
    beyond = sum(ws)
    best = cur = -math.inf
    best_i = best_j = cur_i = 0
    for j, (x, w) in enumerate(zip(xs, ws)):
        extended = cur - memory_gb * beyond * (x - xs[j - 1]) if j else 0.0
        if extended > 0:
            cur = cold_cost * w + extended
        else:
            cur, cur_i = cold_cost * w, j
        beyond -= w
        if cur > best:
            best, best_i, best_j = cur, cur_i, j
    return best_i, best_j


def policy_names() -> list[str]:
    return ["fixed:MINUTES", "hybrid-histogram", "mist"]


def from_name(name: str) -> KeepAlivePolicy:
    """`fixed:MINUTES`, `hybrid-histogram` or `mist`; InvalidRequest names the bad value."""
    if name.startswith("fixed:"):
        try:
            minutes = float(name.removeprefix("fixed:"))
        except ValueError:
            minutes = -1.0
        if not (minutes >= 0 and math.isfinite(minutes)):
            raise InvalidRequest(f"policy {name!r}: fixed:MINUTES needs MINUTES >= 0, e.g. fixed:10")
        return FixedKeepAlive(minutes * 60)
    if name == "hybrid-histogram":
        return HybridHistogram()
    if name == "mist":
        return MistKeepAlive()
    raise InvalidRequest(f"unknown policy {name!r}; known: {', '.join(policy_names())}")


__all__ = [
    "Decision", "FixedKeepAlive", "FunctionSpec", "HistogramState", "HybridHistogram", "KeepAlivePolicy",
    "MistConfig", "MistKeepAlive", "MistState", "best_window", "forecast_next", "from_name",
]
