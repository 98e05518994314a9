import math
import random

import pytest

from mist.core.keepalive import (
    Decision,
    FixedKeepAlive,
    FunctionSpec,
    HybridHistogram,
    MistConfig,
    MistKeepAlive,
    MistState,
    _bucket,
    _edge,
    _kernel,
    _log_uniform_tail,
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
    return policy.on_idle(spec, replay(policy, spec, idle_times), sum(idle_times))[0]


def decide_state(policy, spec, idle_times):
    return replay(policy, spec, idle_times)


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
        ([5.0, 5.0, 600.0], [0.25, 0.25, 0.5], 100.0, 1.0, (0, 1)),  # a point may repeat: its weights add up
    ],
)
def test_best_window_minimises_expected_cold_and_memory_cost(xs, ws, cold_cost, memory_gb, window):
    assert best_window(xs, ws, cold_cost, memory_gb) == window


# -- mist ----------------------------------------------------------------------------------------------


def arrivals(policy, spec, times, busy_s=0.0):
    """Feed arrivals at absolute `times` (each runs `busy_s`); return the state after the last one."""
    state = policy.on_arrival(spec, policy.initial_state(spec), times[0], None)
    for before, t in zip(times, times[1:]):
        _, state = policy.on_idle(spec, state, before + busy_s)
        state = policy.on_arrival(spec, state, t, t - before - busy_s)
    return state


@pytest.mark.parametrize("memory_mb", [128, 256, 1024])
def test_mist_keeps_a_new_function_loaded_while_an_unseen_idle_time_would_still_pay(memory_mb):
    # nothing seen: idle times are log-uniform over [1 s, 1 day], whose hazard 1 / (t ln(day / t))
    # falls to memory / cost at t ln(day / t) = 2200 GB-s / memory (ski rental), in slices of 2 ** 0.25
    decision = decide(MistKeepAlive(), FunctionSpec(memory_mb), [])
    t = decision.keepalive_s
    assert decision.prewarm_delay_s == 0.0
    assert t * math.log(86400 / t) == pytest.approx(2200 / (memory_mb / 1024), rel=0.25)


def test_mist_keeps_a_small_function_loaded_longer_than_a_large_one_with_the_same_history():
    for history in ([], [600.0], [539.0, 59.0] * 10):
        small, large = decide(MistKeepAlive(), MB128, history), decide(MistKeepAlive(), GB1, history)
        assert small.prewarm_delay_s + small.keepalive_s > large.prewarm_delay_s + large.keepalive_s


def test_mist_matches_the_worked_example_of_its_docstring():
    decision = decide(MistKeepAlive(), GB1, [60.0] * 30)
    assert decision.prewarm_delay_s == pytest.approx(51.48, abs=0.01)
    assert decision.keepalive_s == pytest.approx(401.9, abs=0.1)


@pytest.mark.parametrize("period_s", [60.0, 900.0, 3600.0])
def test_mist_prewarms_a_periodic_function_just_before_its_period(period_s):
    decision = decide(MistKeepAlive(), GB1, [period_s] * 30)
    assert 0.75 * period_s < decision.prewarm_delay_s < period_s < decision.prewarm_delay_s + decision.keepalive_s


def test_mist_prewarms_a_cron_function_for_its_next_tick_after_an_extra_call():
    # a 5-minute timer (runs 2 s) called once more, by hand, 100 s after the 30th tick: the next
    # tick is 200 s after that call (198 s of idle), not a period after it
    policy = MistKeepAlive()
    ticks = [300.0 * i for i in range(30)]
    state = arrivals(policy, GB1, [*ticks, ticks[-1] + 100], busy_s=2.0)
    assert policy.timer_forecast(state, ticks[-1] + 102) == pytest.approx(198, abs=300 * 0.02)
    decision = policy.on_idle(GB1, state, ticks[-1] + 102)[0]
    assert 150 < decision.prewarm_delay_s < 198 < decision.prewarm_delay_s + decision.keepalive_s


def test_mist_learns_a_cron_functions_extra_calls_from_its_forecast_errors():
    # every 4th tick of a 10-minute timer is followed by a call 60 s later: the timer forecaster's
    # residuals hold those errors, so the window opens early enough for the extra call as well
    policy = MistKeepAlive()
    times = sorted([600.0 * i for i in range(40)] + [600.0 * i + 60 for i in range(0, 40, 4)])
    state = arrivals(policy, MB128, times, busy_s=1.0)
    assert min(state.residuals) < -50  # an extra call: far earlier than the tick forecast
    assert state.residuals.count(0) > len(state.residuals) / 2  # most ticks were forecast exactly
    decision = policy.on_idle(MB128, state, times[-1] + 1)[0]
    assert decision.prewarm_delay_s < 59  # after a tick: an extra call may come 59 s later


@pytest.mark.parametrize(
    ("last", "next_expected"),
    [
        (539.0, 59.0),  # after the long gap comes the short one...
        (59.0, 539.0),  # ...and after the short one the long one
    ],
)
def test_mist_follows_an_alternating_pattern(last, next_expected):
    history = [539.0, 59.0] * 40 + ([539.0] if last == 539.0 else [539.0, 59.0])
    decision = decide(MistKeepAlive(), FunctionSpec(512), history)
    assert decision.prewarm_delay_s <= next_expected <= decision.prewarm_delay_s + decision.keepalive_s
    assert decision.prewarm_delay_s > 0.7 * next_expected  # unloaded for most of the gap


def test_mist_keeps_an_irregular_chatty_function_loaded_without_prewarm():
    history = [3.0, 41.0, 12.0, 27.0, 8.0, 55.0, 19.0, 33.0] * 10
    decision = decide(MistKeepAlive(), MB128, history)
    assert decision.prewarm_delay_s == 0.0 and decision.keepalive_s > 55


@pytest.mark.parametrize(
    ("history", "covers"),
    [
        ([600.0], (0.0, 6000.0)),  # one idle time says little: a shorter and a longer one are as likely
        ([7979.0], (0.0, 7979.0)),  # even a long one: no bold prewarm on one sample
        ([5519.0, 5939.0], (0.0, 5939.0)),  # nor on two
    ],
)
def test_mist_with_little_history_stays_loaded_from_the_start(history, covers):
    decision = decide(MistKeepAlive(), MB128, history)
    assert decision.prewarm_delay_s <= covers[0]
    assert decision.prewarm_delay_s + decision.keepalive_s >= covers[1]


def test_mist_weighs_forecasters_by_how_well_they_predicted():
    policy = MistKeepAlive()
    cron = arrivals(policy, GB1, [60.0 * i for i in range(40)])
    w_history, w_timer, w_context = policy._weights(cron, 60.0, [207])
    assert w_timer + w_context > 0.99  # both predicted every idle time; the smoothed history did not
    rng = random.Random(7)
    poisson = decide_state(policy, GB1, [rng.expovariate(1 / 30) for _ in range(100)])  # nothing to find
    w_history, w_timer, w_context = policy._weights(poisson, 30.0, [100, 150])
    assert poisson.period == -1 and w_history == w_timer  # no period: the timer was silent, scored as the history
    assert w_context < 0.01  # the contexts it found were chance: their forecasts failed


def test_mist_scores_a_silent_forecaster_as_the_history_so_a_new_one_starts_even():
    policy = MistKeepAlive()
    state = decide_state(policy, GB1, [5.0, 500.0, 50.0, 5000.0])  # no period, no recurring context yet
    before = state.scores
    after = policy.on_arrival(GB1, policy.on_idle(GB1, state, 0.0)[1], 77.0, 77.0).scores
    assert after[1] - 0.97 * before[1] == pytest.approx(after[0] - 0.97 * before[0])
    assert after[2] - 0.97 * before[2] == pytest.approx(after[0] - 0.97 * before[0])


@pytest.mark.parametrize(
    ("history", "bandwidth"),
    [
        ([60.0], 32),  # one sample: the prior spread (a factor e: 50.5 buckets) pooled with nothing: / sqrt(2) x 0.9
        ([60.0] * 10, 9),  # identical samples: the prior fades as 1 / sqrt(n + 1): 50.5 / sqrt(11) x 0.9 x 10^-0.2...
        ([60.0] * 256, 1),  # ...to one bucket
        ([10.0, 1000.0] * 20, 48),  # bimodal (buckets 121, 348): sd 113.5 < IQR / 1.34, pooled 112.4, x 0.9 x 40^-0.2
    ],
)
def test_mist_smooths_its_history_with_a_bandwidth_that_shrinks_with_evidence(history, bandwidth):
    assert decide_state(MistKeepAlive(), GB1, history).bandwidth == bandwidth


def test_mist_counts_timer_forecast_errors_as_residuals_in_buckets():
    policy = MistKeepAlive()
    state = arrivals(policy, GB1, [100.0 * i for i in range(10)])
    _, state = policy.on_idle(GB1, state, 900.0)
    assert state.forecast == pytest.approx(100, rel=0.02)
    on_time = policy.on_arrival(GB1, state, 1000.0, 100.0)
    early = policy.on_arrival(GB1, state, 940.0, 40.0)
    assert on_time.residuals[-1] == 0
    assert early.residuals[-1] == _bucket(40.0) - _bucket(state.forecast) < 0


def test_mist_remembers_only_its_history_length():
    policy = MistKeepAlive(MistConfig(history=16))
    state = decide_state(policy, MB128, [float(i % 7 + 1) for i in range(100)])
    assert len(state.buckets) == len(state.symbols) == 16
    assert state.cum[-1] == 16 and len(state.keys) == len(state.cum)
    assert state.sums == (sum(state.buckets), sum(k * k for k in state.buckets))


def test_mist_is_pure_and_the_first_invocation_only_starts_its_clock():
    policy = MistKeepAlive()
    state = decide_state(policy, MB128, [60.0, 120.0, 60.0])
    first = policy.on_arrival(MB128, policy.initial_state(MB128), 5.0, None)
    assert first == MistState(arrived=5.0, anchor=5.0)
    assert policy.on_idle(MB128, state, 7.0) == policy.on_idle(MB128, state, 7.0)
    assert state == decide_state(policy, MB128, [60.0, 120.0, 60.0])  # on_idle changed nothing it was given


def test_log_uniform_tail_is_scale_free_and_sums_to_one():
    tail = dict(_log_uniform_tail(_bucket(1.0), 86400.0))
    assert sum(tail.values()) == pytest.approx(1.0)
    minutes = sum(p for k, p in tail.items() if 60 <= _edge(k) < 120)
    hours = sum(p for k, p in tail.items() if 3600 <= _edge(k) < 7200)
    assert minutes == pytest.approx(hours, rel=0.3)


@pytest.mark.parametrize("d", [0, 1, 2, 5, 32])
def test_kernel_is_a_symmetric_distribution_of_about_the_bandwidth(d):
    kernel = _kernel(d)
    assert sum(w for _, w in kernel) == pytest.approx(1.0)
    assert sum(o * w for o, w in kernel) == pytest.approx(0.0, abs=1e-9)
    assert math.sqrt(sum(o * o * w for o, w in kernel)) == pytest.approx(d, rel=0.3, abs=0.3)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cold_start_cost_gb_s": 0}, "cold_start_cost_gb_s=0 is invalid: must be > 0"),
        ({"history": 1}, "history=1 is invalid: must be >= 2"),
        ({"margin_rel": 1.0}, "margin_rel=1.0 is invalid: must be in \\[0, 1\\)"),
        ({"context_bucket_ratio": 1.0}, "context_bucket_ratio=1.0 is invalid: must be > 1"),
        ({"timer_window": 2}, "timer_window=2 is invalid: must be >= timer_repeats"),
        ({"score_decay": 0.0}, "score_decay=0.0 is invalid: must be in \\(0, 1\\]"),
    ],
)
def test_mist_config_errors_name_the_key_and_value(change, message):
    with pytest.raises(InvalidRequest, match=message):
        MistKeepAlive(MistConfig(**change))
