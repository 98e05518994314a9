"""Autoscaler: how many instances a function wants, from its in-flight counts (KPA-style).

Two pure pieces. `MetricWindow` turns in-flight counts (requests executing plus requests
queued, recorded whenever the count changes) into time-weighted averages over a stable window
(60 s) and a panic window (6 s). `scale()` turns those averages, the instance counts and the
activator's queue into a desired instance count. Knative's KPA is the model; docs/scaling.md
says where mist differs and why.

Worked example (concurrency 1, so one instance's target is 1 x 0.7 = 0.7 in flight; ten ready):

- stable average 7 in flight: ceil(7 / 0.7) = 10 instances, no change;
- a spike, panic average 21: ceil(21 / 0.7) = 30 >= 2 x 10 ready, so panic: desired 30 at once
  (the scale-up rate allows 1000 x 10);
- the spike ends (panic average 3 -> 5 wanted): still panicking, so the peak 30 is held;
- a stable window (60 s) after the last tick over the threshold, panic ends; the stable window
  wants 5 but the scale-down rate allows halving per tick only: 30 -> 15 -> 7 -> 5;
- scaled to zero, 100 requests queue in the activator: 100 instances at once (burst).

    >>> spec = AutoscalerSpec()
    >>> d, s = scale(spec, Observed(stable_avg=7, panic_avg=7, ready_instances=10), AutoscalerState(), 0.0)
    >>> d.desired_instances, d.panicking
    (10, False)
    >>> d, s = scale(spec, Observed(stable_avg=8, panic_avg=21, ready_instances=10), s, 2.0)
    >>> d.desired_instances, d.panicking, d.reason.value
    (30, True, 'panic')
    >>> d, s = scale(spec, Observed(stable_avg=8, panic_avg=3, ready_instances=30), s, 4.0)
    >>> d.desired_instances, d.panicking
    (30, True)
    >>> d, s = scale(spec, Observed(stable_avg=3.5, panic_avg=3, ready_instances=30), s, 62.0)
    >>> d.desired_instances, d.panicking, d.reason.value
    (15, False, 'scale-down rate')
    >>> d, s = scale(spec, Observed(0, 0, ready_instances=0, queued_requests=100), AutoscalerState(), 0.0)
    >>> d.desired_instances, d.reason.value
    (100, 'burst')
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from mist.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class AutoscalerSpec:
    """Per-function scaling settings; defaults are Knative's except the keep-alive (an input)."""

    container_concurrency: int = 1  # requests one instance serves at once (the function's config)
    target_utilisation: float = 0.7  # aim for 70 % of that, leaving headroom for bursts
    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    panic_threshold: float = 2.0  # panic when the panic window wants >= 2 x the ready instances
    max_scale_up_rate: float = 1000.0  # at most ceil(1000 x current) instances after one tick
    max_scale_down_rate: float = 2.0  # at least floor(current / 2) instances after one tick
    min_instances: int = 0  # kept warm at all times (`mist deploy --min-instances N`)
    max_instances: int | None = None  # None: no limit (`mist deploy --max-instances M`)
    tick_interval_s: float = 2.0  # the rates above are per tick, however often scale() runs
    bucket_s: float = 1.0  # MetricWindow granularity

    def validate(self) -> AutoscalerSpec:
        """Raise InvalidRequest naming the first bad key and its value; return self."""
        checks: list[tuple[str, object, bool, str]] = [
            ("container_concurrency", self.container_concurrency, self.container_concurrency >= 1,
             "must be >= 1"),
            ("target_utilisation", self.target_utilisation, 0 < self.target_utilisation <= 1,
             "must be in (0, 1]"),
            ("bucket_s", self.bucket_s, self.bucket_s > 0, "must be > 0"),
            ("panic_window_s", self.panic_window_s, self.panic_window_s >= self.bucket_s,
             f"must be >= bucket_s ({self.bucket_s})"),
            ("stable_window_s", self.stable_window_s, self.stable_window_s >= self.panic_window_s,
             f"must be >= panic_window_s ({self.panic_window_s})"),
            ("panic_threshold", self.panic_threshold, self.panic_threshold > 1, "must be > 1"),
            ("max_scale_up_rate", self.max_scale_up_rate, self.max_scale_up_rate > 1, "must be > 1"),
            ("max_scale_down_rate", self.max_scale_down_rate, self.max_scale_down_rate > 1, "must be > 1"),
            ("min_instances", self.min_instances, self.min_instances >= 0, "must be >= 0"),
            ("max_instances", self.max_instances,
             self.max_instances is None or self.max_instances >= max(1, self.min_instances),
             f"must be None or >= max(1, min_instances={self.min_instances})"),
            ("tick_interval_s", self.tick_interval_s, self.tick_interval_s > 0, "must be > 0"),
        ]
        for key, value, ok, rule in checks:
            if not ok:
                raise InvalidRequest(f"autoscaler: {key} {rule}, got {value!r}")
        return self


# --- the metric window ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricWindow:
    """In-flight counts as a step function, integrated into fixed time buckets.

    The count recorded at t holds until the next record, so a gap between records means "no
    change", not "no data". Each bucket keeps the integral (count x seconds) over its span;
    averages divide the integral over the window by its length. Memory is one float per bucket
    of the stable window; a record in the same bucket as the last one copies nothing.
    """

    stable_window_s: float = 60.0
    panic_window_s: float = 6.0
    bucket_s: float = 1.0
    closed: tuple[float, ...] = ()  # integrals of the buckets just before `head`, oldest first
    head: int = 0  # index (time // bucket_s) of the bucket `last_t` falls in
    head_area: float = 0.0  # integral over [head's start or first_t, last_t]
    last_t: float | None = None  # time of the last record (None: nothing recorded yet)
    value: float = 0.0  # the count since last_t
    first_t: float | None = None  # time of the first record: windows before it are partial
    idle_since: float | None = None  # when the count last dropped to 0 (None while busy)

    @classmethod
    def for_spec(cls, spec: AutoscalerSpec) -> MetricWindow:
        return cls(spec.stable_window_s, spec.panic_window_s, spec.bucket_s)


def _advance(w: MetricWindow, now: float) -> tuple[tuple[float, ...], int, float, float]:
    """(closed, head, head_area, last_t) once the current count is integrated up to now.

    A time before last_t counts as last_t (the clock is monotonic; a late sample is not lost).
    """
    assert w.last_t is not None
    if now <= w.last_t:
        return w.closed, w.head, w.head_area, w.last_t
    b = w.bucket_s
    idx = math.floor(now / b)
    if idx == w.head:
        return w.closed, idx, w.head_area + w.value * (now - w.last_t), now
    keep = math.ceil(w.stable_window_s / b) + 1
    closing = w.head_area + w.value * ((w.head + 1) * b - w.last_t)
    full = min(idx - w.head - 1, keep)
    closed = (w.closed + (closing,) + (w.value * b,) * full)[-keep:]
    return closed, idx, w.value * (now - idx * b), now


def record(window: MetricWindow, now: float, in_flight: float) -> MetricWindow:
    """The window after the count became `in_flight` at `now` (requests executing + queued)."""
    w = window
    if w.last_t is None:
        return MetricWindow(w.stable_window_s, w.panic_window_s, w.bucket_s, (), math.floor(now / w.bucket_s),
                            0.0, now, in_flight, now, now if in_flight == 0 else None)
    closed, head, head_area, last_t = _advance(w, now)
    if in_flight > 0:
        idle_since = None
    elif w.value > 0 or w.idle_since is None:
        idle_since = last_t
    else:
        idle_since = w.idle_since
    return MetricWindow(w.stable_window_s, w.panic_window_s, w.bucket_s, closed, head, head_area, last_t,
                        in_flight, w.first_t, idle_since)


def _average(closed: tuple[float, ...], head: int, head_area: float, first_t: float, bucket_s: float,
             value: float, now: float, window_s: float) -> float:
    """Time-weighted mean over [now - window_s, now] of a window advanced to now (`_advance`).

    Each bucket's integral covers [max(its start, first_t), its end] (the head bucket's ends at
    now). The buckets after the one the window's start falls in count whole, that one pro rata
    (the time-weighted mean inside a bucket is taken as uniform), the ones before not at all.
    """
    start = max(now - window_s, first_t)
    length = now - start
    if length <= 0:
        return value
    b = bucket_s
    if start == first_t:  # the window reaches back to the first record: every bucket counts whole
        return (head_area + sum(closed)) / length
    cut = math.floor(start / b)  # the bucket the window's start falls in
    back = head - cut  # how far back from the head it is (0: the head itself)
    if back <= 0:  # inside the head bucket
        begin = max(head * b, first_t)
        return head_area * (now - start) / (now - begin) / length if now > begin else value
    n = len(closed)
    if back > n:  # the cut bucket is older than any kept: nothing of it is left
        return (head_area + sum(closed)) / length
    whole = head_area + (sum(closed[n - back + 1 :]) if back > 1 else 0.0)
    end = (cut + 1) * b
    begin = max(cut * b, first_t)
    part = closed[n - back] * (end - start) / (end - begin) if end > begin else 0.0
    return (whole + part) / length


def averages(window: MetricWindow, now: float) -> tuple[float, float]:
    """(stable average, panic average) of the in-flight count up to now; (0, 0) if never recorded.

    Before a whole window has been seen, the average covers the time since the first record
    (as Knative does), so a function's first requests are sized at once.
    """
    if window.last_t is None:
        return 0.0, 0.0
    if window.value == 0 and window.head_area == 0 and not any(window.closed):
        return 0.0, 0.0  # nothing in flight in the whole window (an idle function's every tick)
    closed, head, head_area, now = _advance(window, now)
    first_t, b, value = window.first_t, window.bucket_s, window.value
    assert first_t is not None
    return (_average(closed, head, head_area, first_t, b, value, now, window.stable_window_s),
            _average(closed, head, head_area, first_t, b, value, now, window.panic_window_s))


def idle_for(window: MetricWindow, now: float) -> float:
    """Seconds the count has been 0 (0.0 while busy; infinite if nothing was ever recorded)."""
    if window.last_t is None:
        return math.inf
    if window.value > 0 or window.idle_since is None:
        return 0.0
    return max(0.0, now - window.idle_since)


# --- the decision --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Observed:
    """What the worker saw for one function at one tick."""

    stable_avg: float  # in flight (executing + queued), averaged over the stable window
    panic_avg: float  # the same over the panic window
    ready_instances: int  # serving now
    pending_instances: int = 0  # asked for and still starting
    queued_requests: int = 0  # waiting in the activator's queue for a free instance, right now
    idle_for_s: float = 0.0  # seconds with nothing in flight and nothing queued
    scale_to_zero_after_s: float = math.inf  # the KeepAlivePolicy's window; inf: never

    @classmethod
    def from_window(cls, window: MetricWindow, now: float, *, ready_instances: int,
                    pending_instances: int = 0, queued_requests: int = 0,
                    scale_to_zero_after_s: float = math.inf) -> Observed:
        stable, panic = averages(window, now)
        return cls(stable, panic, ready_instances, pending_instances, queued_requests,
                   idle_for(window, now), scale_to_zero_after_s)


@dataclass(frozen=True, slots=True)
class AutoscalerState:
    """What scale() remembers between ticks. The default is a fresh function's state."""

    panicking_since: float | None = None  # when the current panic began
    last_over_threshold_at: float | None = None  # panic ends a stable window after this
    max_panic_desired: int = 0  # the peak while panicking; never lowered until panic ends
    tick_started_at: float | None = None  # start of the tick the rates are measured in
    tick_instances: int = 0  # ready + pending at that start: the base of the rates

    @classmethod
    def restarted(cls, ready_instances: int, now: float) -> AutoscalerState:
        """State for an autoscaler that lost its history: hold the current scale for a window.

        As KPA does, more than one ready instance starts in panic mode with that count as the
        peak, so an empty metric window does not scale a loaded function down.
        """
        if ready_instances <= 1:
            return cls()
        return cls(panicking_since=now, last_over_threshold_at=now, max_panic_desired=ready_instances)


class Reason(StrEnum):
    """What decided the count, the last rule that changed it winning."""

    STABLE = "stable"  # the stable window's demand
    PANIC = "panic"  # panic mode: the panic window's demand or the held peak
    BURST = "burst"  # the activator's queue (it may also have started a panic)
    SCALE_UP_RATE = "scale-up rate"  # wanted more than max_scale_up_rate allows this tick
    SCALE_DOWN_RATE = "scale-down rate"  # wanted fewer than max_scale_down_rate allows this tick
    KEEP_WARM = "keep warm"  # no demand, but the keep-alive window has not passed
    SCALE_TO_ZERO = "scale to zero"  # idle for the keep-alive window
    MIN_INSTANCES = "min instances"
    MAX_INSTANCES = "max instances"


@dataclass(frozen=True, slots=True)
class Decision:
    desired_instances: int
    panicking: bool
    reason: Reason
    stable_desired: int = 0  # what the stable window wanted (before rates and clamps)
    panic_desired: int = 0  # what the panic window wanted
    burst_desired: int = 0  # what the queue wanted (ready + ceil(queued / concurrency))


def _ceil(x: float) -> int:
    return math.ceil(round(x, 6))  # 7 / 0.7 is 10.000000000000002 in floats, and wants 10


def scale(spec: AutoscalerSpec, observed: Observed, state: AutoscalerState,
          now: float) -> tuple[Decision, AutoscalerState]:
    """Desired instances for one function, and the state to pass to the next call.

    1. wanted = ceil(avg / (concurrency x utilisation)) for each window; 0 for both once the
       function has been idle for the keep-alive window (and min_instances is 0);
    2. burst = ready + ceil(queued / concurrency) when requests wait: not rate-limited;
    3. the windows' wants are rate-limited to [floor(base / down), ceil(base x up)], base being
       max(1, ready + pending) at the start of the tick;
    4. panic while max(panic want, burst) >= threshold x max(1, ready); it ends a stable
       window after the last tick over the threshold. Panicking, desired is the highest of
       stable, panic and burst ever seen in this panic (never lower);
    5. one instance stays while any runs and the keep-alive window has not passed;
    6. clamp to [min_instances, max_instances].
    """
    cap = spec.container_concurrency
    target = cap * spec.target_utilisation
    ready = observed.ready_instances
    current = ready + observed.pending_instances
    queued = observed.queued_requests

    if state.tick_started_at is None or now - state.tick_started_at >= spec.tick_interval_s:
        tick_started_at, tick_instances = now, current
    else:
        tick_started_at, tick_instances = state.tick_started_at, state.tick_instances
    base = max(1, tick_instances)
    max_up = math.ceil(spec.max_scale_up_rate * base)
    max_down = math.floor(base / spec.max_scale_down_rate)

    idle_expired = (spec.min_instances == 0 and queued == 0
                    and observed.idle_for_s >= observed.scale_to_zero_after_s)
    stable_want = 0 if idle_expired else _ceil(observed.stable_avg / target)
    panic_want = 0 if idle_expired else _ceil(observed.panic_avg / target)
    burst = ready + _ceil(queued / cap) if queued > 0 else 0
    stable_d = min(max(stable_want, max_down), max_up)
    panic_d = min(max(panic_want, max_down), max_up)

    panicking_since, last_over = state.panicking_since, state.last_over_threshold_at
    if max(panic_want, burst) / max(1, ready) >= spec.panic_threshold:
        panicking_since = now if panicking_since is None else panicking_since
        last_over = now
    elif last_over is not None and now - last_over >= spec.stable_window_s:
        panicking_since = last_over = None
    panicking = panicking_since is not None

    if panicking:
        peak = max(state.max_panic_desired, stable_d, panic_d, burst)
        desired = peak
        reason = Reason.BURST if burst == peak and burst > max(stable_d, panic_d) else Reason.PANIC
    else:
        peak = 0
        desired = max(stable_d, burst)
        if burst > stable_d:
            reason = Reason.BURST
        elif stable_d > stable_want:
            reason = Reason.SCALE_DOWN_RATE
        elif stable_d < stable_want:
            reason = Reason.SCALE_UP_RATE
        elif desired == 0 and current > 0:
            reason = Reason.SCALE_TO_ZERO
        else:
            reason = Reason.STABLE

    if desired == 0 and current > 0 and not idle_expired:
        desired, reason = 1, Reason.KEEP_WARM
    if desired < spec.min_instances:
        desired, reason = spec.min_instances, Reason.MIN_INSTANCES
    if spec.max_instances is not None and desired > spec.max_instances:
        desired, reason = spec.max_instances, Reason.MAX_INSTANCES

    decision = Decision(desired, panicking, reason, stable_want, panic_want, burst)
    new_state = AutoscalerState(panicking_since, last_over, peak, tick_started_at, tick_instances)
    return decision, new_state


# --- the keep-alive policy's part ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdleWindow:
    """A KeepAlivePolicy's decision for one idle period of a function: unloaded for
    prewarm_delay_s after idle_since, then one instance loaded for keepalive_s, then none."""

    idle_since: float
    prewarm_delay_s: float
    keepalive_s: float


def keep_alive_plan(window: IdleWindow | None, now: float) -> tuple[float, int]:
    """What the keep-alive decision means for `scale()` at `now`: (scale_to_zero_after_s for
    Observed, floor: instances to hold whatever the windows want).

    - busy, or no decision yet: (inf, 0), the metric windows decide;
    - no prewarm delay: the instances may stay for keepalive_s of idleness, (keepalive_s, 0);
    - with a prewarm delay: unload at once, (0, 0); inside [delay, delay + keepalive) one
      instance is loaded again ahead of the expected next arrival, (0, 1); after it, (0, 0).

    >>> keep_alive_plan(IdleWindow(100.0, 0.0, 600.0), 150.0)
    (600.0, 0)
    >>> [keep_alive_plan(IdleWindow(100.0, 60.0, 30.0), t)[1] for t in (120.0, 160.0, 185.0, 190.0)]
    [0, 1, 1, 0]
    """
    if window is None:
        return math.inf, 0
    if window.prewarm_delay_s <= 0:
        return window.keepalive_s, 0
    t = now - window.idle_since
    loaded = window.prewarm_delay_s <= t < window.prewarm_delay_s + window.keepalive_s
    return 0.0, 1 if loaded else 0


def target_instances(spec: AutoscalerSpec, decision: Decision, floor: int) -> int:
    """The instance count to converge to: the autoscaler's, at least the keep-alive floor,
    within [min_instances, max_instances]."""
    target = max(decision.desired_instances, floor, spec.min_instances)
    return target if spec.max_instances is None else min(target, spec.max_instances)
