import math

import pytest

from mist.core.keepalive import Decision, FixedKeepAlive, FunctionSpec, HybridHistogram, MistKeepAlive
from mist.sim import Oracle, Trace, TraceFunction, replay_function, simulate
from mist.sim.engine import idle_period, percentile

DAY = 86400.0


def fn(per_minute, duration_s=1.0, memory_mb=1024.0, key="f"):
    return TraceFunction(key, tuple(per_minute), duration_s, memory_mb)


class Scripted:
    """Answers every on_idle with the same decision and records the calls it gets."""

    name = "scripted"

    def __init__(self, decision):
        self.decision = decision
        self.calls = []

    def initial_state(self, spec):
        return 0

    def on_arrival(self, spec, state, now, idle_s):
        self.calls.append(("arrival", now, idle_s))
        return state + 1

    def on_idle(self, spec, state, now):
        self.calls.append(("idle", now, state))
        return self.decision, state


# -- hand-computed traces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("per_minute", "duration_s", "policy", "cold", "wasted_gb_s"),
    [
        # 3 arrivals in minute 0 (10, 30, 50 s), 1 s each, then one in minute 20 (1230 s): idle 11-30
        # and 31-50 loaded (38 s), from 51 s loaded 600 s then cold at 1230 s, from 1231 s 600 s more
        ([(0, 3), (20, 1)], 1.0, FixedKeepAlive(600), 2, 19 + 19 + 600 + 600),
        # the same with one hour: 1230 s is warm after 1179 s idle; the last hour runs to its end
        ([(0, 3), (20, 1)], 1.0, FixedKeepAlive(3600), 1, 19 + 19 + 1179 + 3600),
        # fixed:0 unloads at once: every arrival after an idle period is cold, nothing is wasted
        ([(0, 3), (20, 1)], 1.0, FixedKeepAlive(0), 4, 0),
        # 30 s runs: 10 -> 40, 30 -> 60, 50 -> 80 s overlap, so only the first is cold; idle from 80 s
        ([(0, 3)], 30.0, FixedKeepAlive(600), 1, 600),
        # a busy minute (100 arrivals 0.6 s apart, 1 s runs): one cold start, idle from 60.7 s
        ([(0, 100)], 1.0, FixedKeepAlive(600), 1, 600),
        # the last keep-alive is cut at the end of the day: last run ends at 86371 s, 29 s left
        ([(1439, 1)], 1.0, FixedKeepAlive(600), 1, 29),
        # the oracle loads exactly on time for nothing: only the first arrival is cold
        ([(0, 3), (20, 1), (700, 5)], 1.0, Oracle(), 1, 0),
    ],
)
def test_cold_starts_and_waste_are_those_computed_by_hand(per_minute, duration_s, policy, cold, wasted_gb_s):
    result = replay_function(fn(per_minute, duration_s), policy, DAY)
    assert result.cold == cold
    assert result.wasted_gb_s == pytest.approx(wasted_gb_s, abs=1e-6)
    assert result.invocations == sum(c for _, c in per_minute)


def test_waste_is_charged_per_gigabyte_of_the_function_memory():
    small = replay_function(fn([(0, 1)], memory_mb=256.0), FixedKeepAlive(600), DAY)
    assert small.wasted_gb_s == pytest.approx(600 * 0.25)


@pytest.mark.parametrize(
    ("arrival_after_idle_s", "warm", "loaded_s"),
    [
        (90.0, False, 0.0),  # during the prewarm delay: still unloaded, cold
        (100.0, True, 0.0),  # exactly when it loads: warm
        (120.0, True, 20.0),  # inside the window: warm, 20 s loaded for nothing
        (150.0, True, 50.0),  # exactly at the unload: warm
        (200.0, False, 50.0),  # after the window: cold, the whole window wasted
    ],
)
def test_a_prewarm_window_is_unloaded_then_loaded_then_unloaded(arrival_after_idle_s, warm, loaded_s):
    loaded, got_warm = idle_period(1000.0, 1000.0 + arrival_after_idle_s, Decision(100.0, 50.0))
    assert (got_warm, loaded) == (warm, pytest.approx(loaded_s))


def test_a_window_past_the_end_of_the_trace_wastes_nothing():
    assert idle_period(DAY - 10, DAY, Decision(60.0, 600.0), arrival=False) == (0.0, False)


def test_an_infinite_keepalive_wastes_until_the_end():
    assert idle_period(100.0, DAY, Decision(0.0, math.inf), arrival=False)[0] == DAY - 100


def test_the_policy_sees_arrivals_and_idles_in_contract_order():
    policy = Scripted(Decision(0.0, 600.0))
    replay_function(fn([(0, 2), (1, 1)], duration_s=40.0), policy, 200.0)
    # arrivals at 15 s (first), 45 s (in flight: not reported), 90 s (idle since 85 s)
    assert policy.calls == [
        ("arrival", 15.0, None),
        ("idle", 85.0, 1),
        ("arrival", 90.0, 5.0),
        ("idle", 130.0, 2),
    ]


def test_a_function_still_executing_at_the_end_has_no_last_idle_period():
    policy = Scripted(Decision(0.0, 600.0))
    replay_function(fn([(1439, 1)], duration_s=100.0), policy, DAY)
    assert [c[0] for c in policy.calls] == ["arrival"]


# -- whole traces ---------------------------------------------------------------------------------


def test_results_sum_over_functions_and_summarise_as_json():
    trace = Trace((fn([(0, 3), (20, 1)], key="a"), fn([(0, 1)], memory_mb=512.0, key="b")))
    result = simulate(trace, FixedKeepAlive(600))
    assert result.summary() == {
        "policy": "fixed:10",
        "functions": 2,
        "invocations": 5,
        "cold_pct": 60.0,  # 2 + 1 of 5
        "p75_function_cold_pct": 87.5,  # per function 50 % and 100 %
        "wasted_gb_s": 1238.0 + 300.0,
    }


@pytest.mark.parametrize("policy", [FixedKeepAlive(600), HybridHistogram(), MistKeepAlive(), Oracle()])
def test_every_policy_replays_a_trace_and_first_arrivals_are_always_cold(policy):
    trace = Trace(tuple(fn([(m, 1 + m % 3) for m in range(0, 1440, 7 + k)], key=str(k)) for k in range(5)))
    result = simulate(trace, policy)
    assert result.invocations == sum(f.invocations for f in trace.functions)
    assert len(trace.functions) <= result.cold <= result.invocations
    assert result.wasted_gb_s >= 0


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 75, 0.0),
        ([7.0], 75, 7.0),
        ([0.0, 100.0], 75, 75.0),
        ([1.0, 2.0, 3.0, 4.0, 5.0], 75, 4.0),
        ([4.0, 1.0, 3.0, 2.0], 75, 3.25),  # unsorted input, interpolated like numpy
    ],
)
def test_percentile_interpolates_between_order_statistics(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected)


def test_the_oracle_decides_to_load_at_the_next_arrival_for_no_time():
    assert Oracle.decide(10.0, 70.0) == Decision(60.0, 0.0)
    assert Oracle.decide(10.0, math.inf) == Decision(math.inf, 0.0)


def test_function_spec_carries_the_memory_to_the_policy():
    seen = []

    class Spy(Scripted):
        def on_idle(self, spec, state, now):
            seen.append(spec)
            return super().on_idle(spec, state, now)

    replay_function(fn([(0, 1)], memory_mb=300.0), Spy(Decision(0.0, 1.0)), DAY)
    assert seen == [FunctionSpec(300.0)]
