"""Replay a trace through a keep-alive policy: cold starts and wasted memory, on a simulated clock.

The model (docs/keepalive.md has the reasoning):
  - arrivals are spread evenly in their minute: the i-th of c in minute m comes at
    m*60 + (i + 0.5) * 60 / c seconds;
  - every invocation runs the function's average duration; concurrency is unlimited, so the
    function is executing while any invocation is in flight;
  - an arrival is cold when the function is neither executing nor loaded; the first one is cold;
  - when the last invocation in flight finishes, the function goes idle and the policy decides:
    unloaded for prewarm_delay_s, then loaded for keepalive_s, then unloaded;
  - wasted memory = seconds loaded but idle x the function's memory, cut at the end of the trace,
    in GB-s (MB / 1024). Window edges are compared with a 1 us tolerance (float sums).

Pure logic: no clock, no I/O. Worked example (fixed:10, 1024 MB, 1 s duration): 3 arrivals in
minute 0 at 10, 30 and 50 s, then one at minute 20 (1230 s). The first is cold; the function is
idle 11-30 s and 31-50 s (loaded, 38 s wasted), then idle from 51 s: loaded until 651 s (600 s
wasted), cold at 1230 s; idle from 1231 s to the end of the day at 86400 s: 600 s wasted.
Two cold starts, 1238 GB-s.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from mist.core.keepalive import Decision, FunctionSpec, KeepAlivePolicy
from mist.sim.policies import Oracle
from mist.sim.trace import Trace, TraceFunction

EDGE_TOLERANCE_S = 1e-6


@dataclass(frozen=True, slots=True)
class FunctionResult:
    key: str
    invocations: int
    cold: int
    wasted_gb_s: float

    @property
    def cold_pct(self) -> float:
        return 100.0 * self.cold / self.invocations if self.invocations else 0.0


@dataclass(frozen=True)
class SimulationResult:
    policy: str
    functions: tuple[FunctionResult, ...]

    @property
    def invocations(self) -> int:
        return sum(f.invocations for f in self.functions)

    @property
    def cold(self) -> int:
        return sum(f.cold for f in self.functions)

    @property
    def cold_pct(self) -> float:
        return 100.0 * self.cold / self.invocations if self.invocations else 0.0

    @property
    def p75_function_cold_pct(self) -> float:
        return percentile([f.cold_pct for f in self.functions if f.invocations], 75)

    @property
    def wasted_gb_s(self) -> float:
        return sum(f.wasted_gb_s for f in self.functions)

    def summary(self) -> dict[str, object]:
        return {
            "policy": self.policy,
            "functions": len(self.functions),
            "invocations": self.invocations,
            "cold_pct": round(self.cold_pct, 4),
            "p75_function_cold_pct": round(self.p75_function_cold_pct, 2),
            "wasted_gb_s": round(self.wasted_gb_s, 1),
        }


def simulate(trace: Trace, policy: KeepAlivePolicy | Oracle) -> SimulationResult:
    return SimulationResult(
        policy.name, tuple(replay_function(fn, policy, trace.duration_s) for fn in trace.functions)
    )


def replay_function(fn: TraceFunction, policy: KeepAlivePolicy | Oracle, end_s: float) -> FunctionResult:
    """Replay one function's arrivals (see the module docstring for the model)."""
    spec = FunctionSpec(fn.memory_mb)
    duration = fn.duration_s
    oracle = isinstance(policy, Oracle)
    state = None if oracle else policy.initial_state(spec)
    busy_until = -math.inf  # when the invocations in flight have all finished
    invocations = cold = 0
    loaded_idle_s = 0.0
    for minute, count in fn.per_minute:
        invocations += count
        gap = 60.0 / count
        for i in range(count):
            t = minute * 60.0 + (i + 0.5) * gap
            if t < busy_until:  # in flight: warm, and no idle period ends
                busy_until = max(busy_until, t + duration)
            elif busy_until == -math.inf:  # the first invocation
                cold += 1
                if not oracle:
                    state = policy.on_arrival(spec, state, t, None)
            else:
                if oracle:
                    decision = Oracle.decide(busy_until, t)
                else:
                    decision, state = policy.on_idle(spec, state, busy_until)
                loaded, warm = idle_period(busy_until, t, decision)
                loaded_idle_s += loaded
                cold += not warm
                if not oracle:
                    state = policy.on_arrival(spec, state, t, t - busy_until)
            busy_until = max(busy_until, t + duration)
            if duration > gap:  # the rest of this minute's arrivals all find it executing
                busy_until = max(busy_until, minute * 60.0 + (count - 0.5) * gap + duration)
                break
    if busy_until < end_s:  # the last idle period, cut at the end of the trace
        decision = Oracle.decide(busy_until, math.inf) if oracle else policy.on_idle(spec, state, busy_until)[0]
        loaded_idle_s += idle_period(busy_until, end_s, decision, arrival=False)[0]
    return FunctionResult(fn.key, invocations, cold, loaded_idle_s * fn.memory_mb / 1024)


def idle_period(idle_at: float, until: float, decision: Decision, arrival: bool = True) -> tuple[float, bool]:
    """(seconds loaded between idle_at and until, whether an arrival at `until` is warm)."""
    load = idle_at + decision.prewarm_delay_s
    unload = load + decision.keepalive_s
    loaded = max(0.0, min(until, unload) - load)
    warm = arrival and load - EDGE_TOLERANCE_S <= until <= unload + EDGE_TOLERANCE_S
    return loaded, warm


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile, interpolating linearly between order statistics (numpy's default)."""
    if not values:
        return 0.0
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
