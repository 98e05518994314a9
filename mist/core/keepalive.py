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
from bisect import bisect_left, bisect_right
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import accumulate
from operator import sub
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
    """The knobs of `MistKeepAlive`, with their defaults (docs/keepalive.md explains each).

    Only `cold_start_cost_gb_s` was tuned on data (half a of the Azure sample, to spend at most
    fixed:10's memory there); the others are structural choices, physical limits or textbook
    values, and the results move little with them.
    """

    cold_start_cost_gb_s: float = 2200.0  # the exchange rate: idle memory worth one cold start
    history: int = 256  # idle times remembered per function
    context_max: int = 16  # longest run of recent idle times matched against the history
    context_min_matches: int = 2  # matches needed to use a context
    context_bucket_ratio: float = 1.25  # idle times within this ratio are "the same" in a context
    timer_repeats: int = 3  # a period is the inter-arrival time seen this often among...
    timer_window: int = 32  # ...the last this many
    residuals: int = 64  # timer forecast errors remembered
    score_decay: float = 0.97  # each forecaster's log score forgets with this factor per idle period
    score_tolerance: float = 0.10  # a forecast is scored on its probability within +-10 % of the truth
    bandwidth_prior_ln: float = 1.0  # what one idle time says of the next: within a factor e or so
    margin_rel: float = 0.02  # each window widened by this fraction of its edge (one bucket)...
    margin_abs_s: float = 1.0  # ...and at least this much (time to load a sandbox)
    min_prewarm_s: float = 5.0  # shorter delays are not worth an unload: stay loaded
    horizon_s: float = DAY  # nothing is planned beyond this

    def validate(self) -> MistConfig:
        checks = [
            ("cold_start_cost_gb_s", self.cold_start_cost_gb_s > 0, "> 0"),
            ("history", self.history >= 2, ">= 2"),
            ("context_max", self.context_max >= 1, ">= 1"),
            ("context_min_matches", self.context_min_matches >= 1, ">= 1"),
            ("context_bucket_ratio", self.context_bucket_ratio > 1, "> 1"),
            ("timer_repeats", self.timer_repeats >= 2, ">= 2"),
            ("timer_window", self.timer_window >= self.timer_repeats, ">= timer_repeats"),
            ("residuals", self.residuals >= 1, ">= 1"),
            ("score_decay", 0 < self.score_decay <= 1, "in (0, 1]"),
            ("score_tolerance", self.score_tolerance > 0, "> 0"),
            ("bandwidth_prior_ln", self.bandwidth_prior_ln >= 0, ">= 0"),
            ("margin_rel", 0 <= self.margin_rel < 1, "in [0, 1)"),
            ("margin_abs_s", self.margin_abs_s >= 0, ">= 0"),
            ("min_prewarm_s", self.min_prewarm_s >= 0, ">= 0"),
            ("horizon_s", self.horizon_s > 1, "> 1"),
        ]
        for key, ok, rule in checks:
            if not ok:
                raise InvalidRequest(f"keep-alive config {key}={getattr(self, key)!r} is invalid: must be {rule}")
        return self


_GRID = math.log(1.02)  # idle times are kept as 2 % wide buckets: x in bucket k <=> 1.02**k <= 1 + x < 1.02**(k+1)
_SLICE = 2.0 ** 0.25  # the unseen tails are cut into slices this wide (ratio): narrow enough to plan with
_SILVERMAN = 0.9  # Silverman's rule of thumb: bandwidth = 0.9 min(sd, IQR / 1.34) n**-1/5


def _bucket(x: float) -> int:
    return int(math.log1p(x) / _GRID) if x > 0 else 0


def _edge(k: int) -> float:
    """Lower edge of bucket k (the upper edge of k - 1), in seconds."""
    return _EDGES[k] if k < len(_EDGES) else math.expm1(k * _GRID)


_EDGES = tuple(math.expm1(k * _GRID) for k in range(2048))  # to 1e17 s: every bucket a forecast can reach


def _mid(k: int) -> float:
    return math.expm1((k + 0.5) * _GRID)


@lru_cache(maxsize=4096)
def _log_uniform_tail(hi: int, horizon_s: float) -> tuple[tuple[int, float], ...]:
    """(bucket, probability) of an idle time beyond bucket `hi`: log-uniform up to the horizon, in slices
    of ratio _SLICE (scale-free: as likely between 1 and 2 minutes as between 1 and 2 hours)."""
    start = x = max(1.0, _edge(hi))
    if start * 1.02 >= horizon_s:
        return ((hi, 1.0),)
    total = math.log(horizon_s / start)
    out = []
    while x < horizon_s:
        top = min(_SLICE * x, horizon_s)
        out.append((_bucket(math.sqrt(x * top)), math.log(top / x) / total))
        x = top
    return tuple(out)


@lru_cache(maxsize=65536)
def _below(lo: int, hi: int, n: int) -> tuple[int, ...]:
    """Sixteen buckets spread log-uniformly over about four sample spacings (in log terms) below bucket `lo`."""
    span = min(lo, 4 * hi / (n + 1))  # buckets are log-spaced already
    return tuple(max(0, int(lo - span * (2 * i + 1) / 32)) for i in range(16))


@lru_cache(maxsize=4096)
def _kernel(d: int) -> tuple[tuple[int, float], ...]:
    """(offset, weight) of a Gaussian kernel of standard deviation d buckets: 3 points at 0 and
    +-d sqrt 2 while that leaves no gap wider than ~20 %, else 9 points to +-2 d in steps of d / 2."""
    if d < _WIDE:
        far = round(d * math.sqrt(2)) if d > 1 else d  # 1/4, 1/2, 1/4: variance d**2
        return ((-far, 0.25), (0, 0.5), (far, 0.25)) if d else ((0, 1.0),)
    step = d // 2
    offsets = range(-4 * step, 4 * step + 1, step)
    weights = [math.exp(-0.5 * (o / d) ** 2) for o in offsets]
    total = sum(weights)
    return tuple((o, w / total) for o, w in zip(offsets, weights))


_WIDE = 8  # buckets: a kernel this wide is drawn with 9 points (3 would leave islands a plan could target)


@dataclass(frozen=True, slots=True)
class MistState:
    # the order-0 history: the last `history` idle times as 2 % buckets, oldest first...
    buckets: tuple[int, ...] = ()
    symbols: str = ""  # ...the same as one letter each in coarse buckets, for the context forecaster...
    keys: tuple[int, ...] = ()  # ...their distinct buckets, sorted...
    cum: tuple[int, ...] = ()  # ...and the cumulative count up to each key
    sums: tuple[int, int] = (0, 0)  # sum of the buckets and of their squares (for the bandwidth)
    bandwidth: int = 0  # the smoothing kernel's standard deviation, in buckets
    # the timer forecaster
    arrived: float = 0.0  # when the last idle period ended
    iats: tuple[int, ...] = ()  # the last inter-arrival times (2 % buckets)
    period: int = -1  # their most frequent bucket if seen `timer_repeats` times, else -1
    anchor: float = 0.0  # the last arrival on the period's lattice
    residuals: tuple[int, ...] = ()  # bucket(actual) - bucket(forecast) of the last timer forecasts
    # what was forecast at the last on_idle, scored at the next arrival
    forecast: float | None = None  # the timer's next-arrival forecast (idle seconds)
    follow: tuple[int, ...] = ()  # the context forecaster's idle times
    scores: tuple[float, float, float] = (0.0, 0.0, 0.0)  # discounted log scores: history, timer, context


class MistKeepAlive:
    """mist's policy: the window that minimises expected cost under a learned idle-time forecast.

    1. Forecast the next idle time as a distribution. Three forecasters, each calibrated on the
       function's own history, are mixed by how well each predicted it lately (weights exp(score),
       score = discounted sum of the log probability each put within +-10 % of what happened):
       - history: the last `history` idle times, each smoothed in log space with a Silverman
         bandwidth (pooled with a prior spread of a factor e: one idle time says little), plus two
         unseen ones (rule of succession): one shorter than the shortest, one longer than the
         longest (log-uniform up to a day: idle times are scale-free);
       - timer: if one inter-arrival time recurs (cron), the next point of that lattice after now,
         spread by the function's own past forecast errors (extra calls, missed firings);
       - context: what followed the most recent idle times earlier (the longest recurring run of
         up to 16, in 25 % buckets), with a Witten-Bell escape to the history.
       A forecaster that has nothing to say is scored as the history, so a new one starts even.
    2. Decide. A cold start is worth `cold_start_cost_gb_s` of idle memory (GB x s). Loading over
       [a, b] after going idle costs memory x E[time loaded before the next arrival] and saves a
       cold start for each idle time in [a, b]. The best [a, b] over the forecast's points is a
       maximum-sum segment (`best_window`, linear time). It is then widened by the margins.

    Consequences, with no special cases: a new function is kept loaded (its forecast is all
    unseen tail, ski-rental style: a 128 MB function 1.8 h, a 1 GB one 8 min); a cron
    function is unloaded between ticks and loaded just before the next one, even after an extra
    call; a chatty irregular function stays loaded; a large function is kept for less time than a
    small one with the same history.

    Worked example (defaults; a 1024 MB function idle 60 s thirty times, back to back): the timer
    forecaster found the period (59.9 s, the middle of its 2 % bucket) and forecast the last 27
    arrivals exactly; the context forecaster saw "60, 60, ..." followed by 60 s fourteen times;
    the history forecaster smooths its thirty 60 s with a bandwidth of 4 buckets (points at 60 s
    and 12 % either side). Scores: timer -6.2, context -6.6, history -20.5, so the mixture is
    60 % timer, 40 % context, ~0 % history. What the timer and context leave to the history
    (2 / 29 and 1 / 15 of theirs) is 6.8 %; it puts 96.4 % in the 60 s bucket [59.3 s, 60.5 s),
    1.8 % around 53 s and 1.8 % around 67 s and beyond. Loading at 53 s costs 1 GB x 6 s per idle
    period to save 1.7 % x 2200 = 37 GB-s, so it pays; loading earlier does not. Beyond 60 s the
    window runs on while the unseen longer idle times' hazard exceeds memory / cost, to 453 s.
    Decision (with the 1 s margin): unloaded 51.5 s, then loaded 401.9 s; the next call, at 60 s,
    is warm after 8.5 s of idle memory (fixed:10 holds it 60 s).
    """

    name = "mist"

    def __init__(self, config: MistConfig | None = None) -> None:
        self.config = (config or MistConfig()).validate()
        self._coarse = _GRID / math.log(self.config.context_bucket_ratio)
        self._prior = self.config.bandwidth_prior_ln / _GRID  # in buckets

    def initial_state(self, spec: FunctionSpec) -> MistState:
        return MistState()

    # -- the contract ----------------------------------------------------------------------------

    def on_arrival(self, spec: FunctionSpec, state: MistState, now: float, idle_s: float | None) -> MistState:
        if idle_s is None:
            return replace(state, arrived=now, anchor=now)
        cfg = self.config
        scores, residuals = self._score(state, idle_s), state.residuals
        if state.forecast is not None:  # the forecast's error, in buckets
            residuals = (*residuals, _bucket(idle_s) - _bucket(state.forecast))[-cfg.residuals :]
        history = self._remember(state, _bucket(idle_s))
        iats = (*state.iats, _bucket(now - state.arrived))[-cfg.timer_window :]
        period, anchor = self._lattice(state, iats, now)
        if period != state.period:
            residuals = ()  # forecasts made for another period say nothing of this one
        return MistState(*history, now, iats, period, anchor, residuals, None, (), scores)

    def on_idle(self, spec: FunctionSpec, state: MistState, now: float) -> tuple[Decision, MistState]:
        cfg = self.config
        forecast = self.timer_forecast(state, now)
        follow = self.context_forecast(state)
        keys, weights = zip(*sorted(self._mixture(state, forecast, follow)))
        xs = list(map(_EDGES.__getitem__, keys))
        i, j = best_window(xs, weights, cfg.cold_start_cost_gb_s, spec.memory_mb / 1024)
        start, end = _edge(keys[i]), _edge(keys[j] + 1)
        start = max(0.0, start - max(cfg.margin_abs_s, cfg.margin_rel * start))
        end += max(cfg.margin_abs_s, cfg.margin_rel * end)
        if start < cfg.min_prewarm_s:
            start = 0.0
        return Decision(start, end - start), replace(state, forecast=forecast, follow=tuple(follow))

    # -- the forecasters ---------------------------------------------------------------------------

    def timer_forecast(self, state: MistState, now: float) -> float | None:
        """Idle seconds until the next point of the period's lattice, or None (no period, or lost)."""
        if state.period < 0:
            return None
        p = _mid(state.period)
        since = now - state.anchor
        if since > 2.5 * p:
            return None
        return state.anchor + max(1, math.ceil((since + self.config.margin_abs_s) / p)) * p - now

    def context_forecast(self, state: MistState) -> list[int]:
        """Buckets of the idle times that followed the longest recent context seen before (at most
        the 32 newest), or [] if no context of up to `context_max` occurred `context_min_matches` times."""
        cfg, s, n = self.config, state.symbols, len(state.symbols)
        for length in range(min(cfg.context_max, n - 1), 0, -1):
            suffix = s[n - length :]
            found: list[int] = []
            end = n - 1  # an occurrence must be followed by an idle time
            p = s.rfind(suffix, 0, end)
            while p >= 0:
                found.append(state.buckets[p + length])
                if len(found) == 32:
                    break
                p = s.rfind(suffix, 0, p + length - 1)
            if len(found) >= cfg.context_min_matches:
                return found
        return []

    def _weights(self, state: MistState, forecast: float | None, follow: Sequence[int]) -> tuple[float, float, float]:
        """Mixture weights of (history, timer, context) from their scores; 0 for a silent forecaster."""
        live = (True, forecast is not None, bool(follow))
        top = max(s for s, on in zip(state.scores, live) if on)
        w = [math.exp(s - top) if on else 0.0 for s, on in zip(state.scores, live)]
        total = sum(w)
        return w[0] / total, w[1] / total, w[2] / total

    def _mixture(self, state: MistState, forecast: float | None, follow: Sequence[int]) -> list[tuple[int, float]]:
        """The forecast distribution as (bucket, probability) pairs; a bucket may appear more than once."""
        w_history, w_timer, w_context = self._weights(state, forecast, follow)
        out: list[tuple[int, float]] = []
        if w_timer:
            f, n = _bucket(forecast), len(state.residuals)
            if n:
                unit = w_timer / (n + 2)
                out += [(f + r if f + r > 0 else 0, c * unit) for r, c in Counter(state.residuals).items()]
                w_history += 2 * unit
            else:  # no track record yet: half on the forecast, half on the history
                out.append((f, w_timer / 2))
                w_history += w_timer / 2
        if w_context:
            distinct = len({int(k * self._coarse) for k in follow})
            unit = w_context / (len(follow) + distinct)
            out += [(k, c * unit) for k, c in Counter(follow).items()]
            w_history += distinct * unit
        self._add_history(out, state, w_history)
        return out

    def _add_history(self, out: list[tuple[int, float]], state: MistState, mass: float) -> None:
        """Spread `mass` as the history forecaster does: smoothed idle times plus two unseen ones."""
        n = len(state.buckets)
        if not n:  # nothing seen yet: both unseen idle times are "longer than 1 s"
            out += [(k, mass * p) for k, p in _log_uniform_tail(_bucket(1.0), self.config.horizon_s)]
            return
        unit, kernel = mass / (n + 2), _kernel(state.bandwidth)
        counts = map(sub, state.cum, (0, *state.cum[:-1]))
        if len(kernel) > 1:
            for k, c in zip(state.keys, counts):
                out += [(k + o if k + o > 0 else 0, c * unit * w) for o, w in kernel]
        else:
            out += [(k, c * unit) for k, c in zip(state.keys, counts)]
        out += [(k, unit / 16) for k in _below(state.keys[0], state.keys[-1] + 1, n)]
        out += [(k, unit * p) for k, p in _log_uniform_tail(state.keys[-1] + 1, self.config.horizon_s)]

    # -- learning ------------------------------------------------------------------------------------

    def _score(self, state: MistState, idle_s: float) -> tuple[float, float, float]:
        """The scores after an idle time of `idle_s`: each adds log P(within +-tolerance of it)."""
        cfg = self.config
        lo, hi = _bucket(idle_s / (1 + cfg.score_tolerance)), _bucket(idle_s * (1 + cfg.score_tolerance))
        p_history = self._history_mass(state, lo, hi)
        p_timer = p_context = p_history  # what a silent forecaster said
        if state.forecast is not None:
            n = len(state.residuals)
            if n:
                f = _bucket(state.forecast)
                hits = sum(c for r, c in Counter(state.residuals).items() if lo - f <= r <= hi - f)
                p_timer = (hits + 2 * p_history) / (n + 2)
            else:
                p_timer = ((lo <= _bucket(state.forecast) <= hi) + p_history) / 2
        if state.follow:
            n, distinct = len(state.follow), len({int(k * self._coarse) for k in state.follow})
            hits = sum(c for k, c in Counter(state.follow).items() if lo <= k <= hi)
            p_context = (hits + distinct * p_history) / (n + distinct)
        g = cfg.score_decay
        return tuple(g * s + math.log(max(p, 1e-12)) for s, p in zip(state.scores, (p_history, p_timer, p_context)))

    def _history_mass(self, state: MistState, lo: int, hi: int) -> float:
        """Probability the history forecaster puts on buckets lo..hi."""
        n = len(state.buckets)
        if not n:
            return sum(p for k, p in _log_uniform_tail(_bucket(1.0), self.config.horizon_s) if lo <= k <= hi)
        keys, cum, d = state.keys, state.cum, state.bandwidth

        def count(a: int, b: int) -> int:
            i, j = bisect_left(keys, a), bisect_right(keys, b)
            return (cum[j - 1] if j else 0) - (cum[i - 1] if i else 0)

        atoms = sum(w * count(lo - o, hi - o) for o, w in _kernel(d))
        below = sum(lo <= k <= hi for k in _below(keys[0], keys[-1] + 1, n)) / 16
        tail = sum(p for k, p in _log_uniform_tail(keys[-1] + 1, self.config.horizon_s) if lo <= k <= hi)
        return (atoms + below + tail) / (n + 2)

    def _remember(self, state: MistState, k: int) -> tuple:
        """The history fields with idle time bucket `k` added (and the oldest dropped if full)."""
        counts = dict(zip(state.keys, map(sub, state.cum, (0, *state.cum[:-1]))))
        counts[k] = counts.get(k, 0) + 1
        buckets = (*state.buckets, k)
        symbols = state.symbols + chr(48 + min(200, int(k * self._coarse)))
        total, squares = state.sums[0] + k, state.sums[1] + k * k
        if len(buckets) > self.config.history:
            gone = buckets[0]
            counts[gone] -= 1
            if not counts[gone]:
                del counts[gone]
            buckets, symbols = buckets[1:], symbols[1:]
            total, squares = total - gone, squares - gone * gone
        keys = tuple(sorted(counts))
        cum = tuple(accumulate(map(counts.__getitem__, keys)))
        return buckets, symbols, keys, cum, (total, squares), self._bandwidth(keys, cum, total, squares)

    def _bandwidth(self, keys: tuple[int, ...], cum: tuple[int, ...], total: int, squares: int) -> int:
        """Silverman's bandwidth in buckets, its spread pooled with the prior as one more sample."""
        n = cum[-1]
        sd = math.sqrt(max(0.0, squares / n - (total / n) ** 2))
        iqr = keys[bisect_left(cum, 3 * n / 4)] - keys[bisect_left(cum, n / 4)]
        spread = min(sd, iqr / 1.34)
        pooled = math.sqrt((self._prior**2 + n * spread * spread) / (n + 1))
        return round(_SILVERMAN * pooled * n**-0.2)

    def _lattice(self, state: MistState, iats: tuple[int, ...], now: float) -> tuple[int, float]:
        """(period, anchor) after an arrival at `now`: the period is the most frequent recent
        inter-arrival time; the anchor moves to `now` if it is on the lattice (or the lattice is lost)."""
        cfg = self.config
        n, period = max(map(lambda b: (iats.count(b), b), set(iats)))
        period = period if n >= cfg.timer_repeats else -1
        if period != state.period or period < 0:
            return period, now
        p = _mid(period)
        m = round((now - state.anchor) / p)
        on_lattice = m >= 1 and abs(now - state.anchor - m * p) <= max(cfg.margin_abs_s, cfg.margin_rel * p)
        return period, now if on_lattice or now - state.anchor > 2.5 * p else state.anchor


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
    loaded = memory_gb * sum(ws)  # memory x P(no arrival yet) at the current point
    best = cur = -math.inf
    best_i = best_j = cur_i = j = 0
    previous = xs[0] if xs else 0.0
    for x, w in zip(xs, ws):
        extended = cur - loaded * (x - previous)
        if extended > 0:
            cur = cold_cost * w + extended
        else:
            cur, cur_i = cold_cost * w, j
        loaded -= memory_gb * w
        previous = x
        if cur > best:
            best, best_i, best_j = cur, cur_i, j
        j += 1
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
