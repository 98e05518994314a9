import math

import pytest

from mist.core.keepalive import (
    Decision,
    FixedKeepAlive,
    FunctionSpec,
    HybridHistogram,
    MistConfig,
    MistKeepAlive,
    MistState,
    best_window,
    forecast_next,
    from_name,
)
from mist.errors import InvalidRequest

MB128 = FunctionSpec(128)
GB1 = FunctionSpec(1024)


def replay(policy, spec, idle_times):
    """Feed a history (first invocation, then one idle period per value); return the state."""
    state = policy.initial_state(spec)
    state = policy.on_arrival(spec, state, 0.0, None)
    now = 0.0
    for idle_s in idle_times:
        _, state = policy.on_idle(spec, state, now)
        now += idle_s
        state = policy.on_arrival(spec, state, now, idle_s)
    return state


def decide(policy, spec, idle_times):
    return policy.on_idle(spec, replay(policy, spec, idle_times), 1e6)[0]


# -- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("fixed:10", FixedKeepAlive(600.0)),
        ("fixed:0.5", FixedKeepAlive(30.0)),
        ("fixed:0", FixedKeepAlive(0.0)),
        ("hybrid-histogram", HybridHistogram()),
    ],
)
def test_policies_are_found_by_name(name, expected):
    assert from_name(name) == expected


def test_mist_is_found_by_name_with_the_default_config():
    policy = from_name("mist")
    assert isinstance(policy, MistKeepAlive) and policy.config == MistConfig()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("fixed:", "fixed:MINUTES needs MINUTES >= 0"),
        ("fixed:-1", "fixed:MINUTES needs MINUTES >= 0"),
        ("fixed:ten", "fixed:MINUTES needs MINUTES >= 0"),
        ("fixed:inf", "fixed:MINUTES needs MINUTES >= 0"),
        ("lru", "unknown policy 'lru'; known: fixed:MINUTES, hybrid-histogram, mist"),
    ],
)
def test_a_bad_policy_name_is_rejected_with_the_name_in_the_message(name, message):
    with pytest.raises(InvalidRequest, match=message):
        from_name(name)


def test_a_fixed_policy_is_named_by_its_minutes():
    assert [FixedKeepAlive(600).name, FixedKeepAlive(90).name] == ["fixed:10", "fixed:1.5"]


# -- fixed -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("history", [[], [5.0], [30.0, 7200.0, 1.0]])
def test_fixed_keeps_loaded_for_its_keepalive_whatever_the_history(history):
    assert decide(FixedKeepAlive(600), MB128, history) == Decision(0.0, 600.0)


# -- hybrid histogram --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([], Decision(0.0, 14400.0)),  # nothing known: the range, no prewarm
        ([600.0], Decision(0.0, 14400.0)),  # one idle time is no pattern yet
        # bins 10 (x3) and 11: head bin 10 -> prewarm 0.9 x 600; tail bin 11 -> keep (11 + 1) x 60 x 1.1
        ([600.0, 600.0, 600.0, 660.0], Decision(540.0, 792.0)),
        ([30.0] * 50, Decision(0.0, 66.0)),  # everything in bin 0: no prewarm, keep one bin + 10 %
        ([30.0] * 50 + [3000.0], Decision(0.0, 3366.0)),  # 1 in 51 > 1 %: the tail reaches bin 50
        ([60.0 * i + 1 for i in range(100)], Decision(0.0, 14400.0)),  # spread out, CV 1.19 < 2
        # mostly beyond 4 h: AR(1) forecast 20000 s (phi = -2/3), prewarm -15 %, keep 30 %
        ([18000.0, 21600.0, 18000.0], Decision(17000.0, 6000.0)),
    ],
)
def test_hybrid_histogram_decisions_follow_the_paper(history, expected):
    got = decide(HybridHistogram(), MB128, history)
    assert got.prewarm_delay_s == pytest.approx(expected.prewarm_delay_s)
    assert got.keepalive_s == pytest.approx(expected.keepalive_s)


@pytest.mark.parametrize(
    ("history", "cv"),
    [
        ([], 0.0),
        ([600.0], math.sqrt(240)),  # one sample: always 15.49
        ([600.0, 600.0, 600.0, 660.0], 12.232),
        ([60.0 * i + 1 for i in range(100)], 1.1857),
    ],
)
def test_hybrid_histogram_cv_is_over_all_240_bins(history, cv):
    policy = HybridHistogram()
    assert policy.cv(replay(policy, MB128, history)) == pytest.approx(cv, rel=1e-3)


def test_hybrid_histogram_ignores_the_memory_size():
    history = [600.0, 600.0, 660.0]
    assert decide(HybridHistogram(), MB128, history) == decide(HybridHistogram(), GB1, history)


@pytest.mark.parametrize(
    ("values", "forecast"),
    [
        ([42.0], 42.0),  # too short to fit: the last value
        ([5.0, 7.0], 7.0),
        ([10.0, 10.0, 10.0], 10.0),  # no variance: the mean
        ([100.0, 300.0, 100.0, 300.0], 125.0),  # alternating: phi = -0.75
        ([100.0, 200.0, 300.0, 400.0], 287.5),  # trending: phi = 0.25, pulled towards the mean (stationary fit)
    ],
)
def test_forecast_next_fits_an_ar1_model(values, forecast):
    assert forecast_next(values) == pytest.approx(forecast)


# -- best_window -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xs", "ws", "cold_cost", "memory_gb", "window"),
    [
        ([60.0], [1.0], 100.0, 1.0, (0, 0)),  # one point: load exactly there
        ([10.0, 20.0, 1000.0], [0.45, 0.45, 0.1], 100.0, 1.0, (0, 1)),  # the far 10 % is not worth 980 s
        ([10.0, 20.0, 1000.0], [0.45, 0.45, 0.1], 100.0, 0.0, (0, 2)),  # free memory: cover everything
        ([10.0, 20.0, 1000.0], [0.45, 0.45, 0.1], 1e6, 1.0, (0, 2)),  # colds priceless: cover everything
        ([1.0, 500.0, 510.0], [0.1, 0.45, 0.45], 100.0, 1.0, (1, 2)),  # skip the rare early one: prewarm
        ([5.0, 600.0], [0.5, 0.5], 100.0, 1.0, (0, 0)),  # bimodal and far apart: the cheap mode first
    ],
)
def test_best_window_minimises_expected_cold_and_memory_cost(xs, ws, cold_cost, memory_gb, window):
    assert best_window(xs, ws, cold_cost, memory_gb) == window


# -- mist ----------------------------------------------------------------------------------------------


def test_mist_keeps_a_new_function_loaded_about_cost_times_alpha_over_memory():
    decision = decide(MistKeepAlive(), GB1, [])
    assert decision.prewarm_delay_s == 0.0
    assert 500 < decision.keepalive_s < 2200 * 0.5 / 1  # the ski-rental horizon, in doubling slices


def test_mist_keeps_a_small_function_loaded_longer_than_a_large_one():
    small, large = decide(MistKeepAlive(), MB128, []), decide(MistKeepAlive(), GB1, [])
    assert small.keepalive_s > 4 * large.keepalive_s


def test_mist_prewarms_a_periodic_function_just_before_its_period():
    decision = decide(MistKeepAlive(), GB1, [60.0] * 30)
    assert decision.prewarm_delay_s == pytest.approx(60 * 1.02 ** -0.5 - 6, abs=1)  # bucket edge - 10 %
    assert decision.prewarm_delay_s < 60 < decision.prewarm_delay_s + decision.keepalive_s


def test_mist_matches_the_worked_example_of_its_docstring():
    decision = decide(MistKeepAlive(), GB1, [60.0] * 30)
    assert decision.prewarm_delay_s == pytest.approx(53.36, abs=0.01)
    assert decision.keepalive_s == pytest.approx(1460.7, abs=0.1)


@pytest.mark.parametrize(
    ("last", "next_expected"),
    [
        (539.0, 59.0),  # after the long gap comes the short one...
        (59.0, 539.0),  # ...and after the short one the long one
    ],
)
def test_mist_follows_an_alternating_pattern_by_context(last, next_expected):
    history = [539.0, 59.0] * 40 + ([539.0] if last == 539.0 else [539.0, 59.0])
    decision = decide(MistKeepAlive(), FunctionSpec(512), history)
    assert decision.prewarm_delay_s <= next_expected <= decision.prewarm_delay_s + decision.keepalive_s
    assert decision.prewarm_delay_s > 0.8 * next_expected  # unloaded for most of the gap


def test_mist_keeps_an_irregular_chatty_function_loaded_without_prewarm():
    history = [3.0, 41.0, 12.0, 27.0, 8.0, 55.0, 19.0, 33.0] * 10
    decision = decide(MistKeepAlive(), MB128, history)
    assert decision.prewarm_delay_s == 0.0 and decision.keepalive_s > 55


def test_mist_with_one_idle_time_stays_loaded_over_nearly_all_of_it_and_beyond():
    decision = decide(MistKeepAlive(), MB128, [600.0])
    assert decision.prewarm_delay_s < 0.1 * 600  # a shorter gap is likely: 1 in 3 by succession
    assert decision.prewarm_delay_s + decision.keepalive_s > 10 * 600  # so is a longer one


def test_mist_trusts_a_context_less_once_its_predictions_failed():
    policy = MistKeepAlive()
    state = replay(policy, GB1, [539.0, 59.0] * 40)  # the context says 539 s comes next
    trusted = policy.on_idle(GB1, state, 0)[0]
    doubted = policy.on_idle(GB1, MistState(state.buckets, state.symbols, state.counts, None, 1, 40), 0)[0]
    assert trusted.prewarm_delay_s > 450  # unloaded until just before 539 s
    assert doubted.prewarm_delay_s < 59  # half the history says 59 s: covered too


def test_mist_counts_a_context_hit_or_miss_on_the_next_arrival():
    policy = MistKeepAlive()
    state = replay(policy, GB1, [60.0] * 10)
    _, state = policy.on_idle(GB1, state, 0)
    hit = policy.on_arrival(GB1, state, 0, 61.0)
    miss = policy.on_arrival(GB1, state, 0, 300.0)
    assert (hit.hits - state.hits, hit.misses - state.misses) == (1, 0)
    assert (miss.hits - state.hits, miss.misses - state.misses) == (0, 1)


def test_mist_remembers_only_its_history_length():
    policy = MistKeepAlive(MistConfig(history=16))
    state = replay(policy, MB128, [float(i % 7 + 1) for i in range(100)])
    assert len(state.buckets) == len(state.symbols) == 16
    assert sum(c for _, c in state.counts) == 16


def test_mist_ignores_the_first_invocation_and_is_pure():
    policy = MistKeepAlive()
    state = replay(policy, MB128, [60.0, 120.0, 60.0])
    assert policy.on_arrival(MB128, state, 5.0, None) is state
    assert policy.on_idle(MB128, state, 7.0) == policy.on_idle(MB128, state, 7.0)
    assert state == replay(policy, MB128, [60.0, 120.0, 60.0])  # on_idle changed nothing it was given


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cold_start_cost_gb_s": 0}, "cold_start_cost_gb_s=0 is invalid: must be > 0"),
        ({"history": 1}, "history=1 is invalid: must be >= 2"),
        ({"margin_rel": 1.0}, "margin_rel=1.0 is invalid: must be in \\[0, 1\\)"),
        ({"context_bucket_ratio": 1.0}, "context_bucket_ratio=1.0 is invalid: must be > 1"),
    ],
)
def test_mist_config_errors_name_the_key_and_value(change, message):
    with pytest.raises(InvalidRequest, match=message):
        MistKeepAlive(MistConfig(**change))
