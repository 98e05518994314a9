import doctest
import math
import random
from collections import deque

import pytest

import mist.core.autoscale as autoscale
from mist.core.autoscale import (
    AutoscalerSpec,
    AutoscalerState,
    Decision,
    MetricWindow,
    Observed,
    Reason,
    averages,
    idle_for,
    record,
    scale,
)
from mist.errors import InvalidRequest

SPEC = AutoscalerSpec()


def run(spec: AutoscalerSpec, ticks: list[tuple[float, Observed]], state: AutoscalerState | None = None
        ) -> list[Decision]:
    """Feed scale() a sequence of (time, observation) on a fake clock; return every decision."""
    state = state or AutoscalerState()
    decisions = []
    for now, observed in ticks:
        decision, state = scale(spec, observed, state, now)
        decisions.append(decision)
    return decisions


def window(*samples: tuple[float, float], spec: AutoscalerSpec = SPEC) -> MetricWindow:
    w = MetricWindow.for_spec(spec)
    for t, in_flight in samples:
        w = record(w, t, in_flight)
    return w


# --- the spec ------------------------------------------------------------------------------


def test_the_defaults_are_knatives_and_validate():
    spec = AutoscalerSpec().validate()
    assert (spec.target_utilisation, spec.stable_window_s, spec.panic_window_s, spec.panic_threshold,
            spec.max_scale_up_rate, spec.max_scale_down_rate) == (0.7, 60.0, 6.0, 2.0, 1000.0, 2.0)


@pytest.mark.parametrize(
    ("changes", "key", "value"),
    [
        ({"container_concurrency": 0}, "container_concurrency", "0"),
        ({"target_utilisation": 0.0}, "target_utilisation", "0.0"),
        ({"target_utilisation": 1.5}, "target_utilisation", "1.5"),
        ({"panic_window_s": 0.5}, "panic_window_s", "0.5"),
        ({"stable_window_s": 5.0}, "stable_window_s", "5.0"),
        ({"panic_threshold": 1.0}, "panic_threshold", "1.0"),
        ({"max_scale_up_rate": 1.0}, "max_scale_up_rate", "1.0"),
        ({"max_scale_down_rate": 0.5}, "max_scale_down_rate", "0.5"),
        ({"min_instances": -1}, "min_instances", "-1"),
        ({"min_instances": 5, "max_instances": 3}, "max_instances", "3"),
        ({"max_instances": 0}, "max_instances", "0"),
        ({"tick_interval_s": 0}, "tick_interval_s", "0"),
        ({"bucket_s": -1.0}, "bucket_s", "-1.0"),
    ],
)
def test_validation_names_the_bad_key_and_its_value(changes, key, value):
    with pytest.raises(InvalidRequest) as info:
        AutoscalerSpec(**changes).validate()
    assert key in info.value.message and f"got {value}" in info.value.message


# --- the metric window ---------------------------------------------------------------------


def test_an_empty_window_averages_zero_and_has_always_been_idle():
    w = MetricWindow.for_spec(SPEC)
    assert averages(w, 10.0) == (0.0, 0.0)
    assert idle_for(w, 10.0) == math.inf


@pytest.mark.parametrize(
    ("samples", "now", "stable", "panic"),
    [
        ([(5.0, 10)], 5.0, 10, 10),  # a sample at t is the average at t
        ([(5.0, 10)], 7.5, 10, 10),  # and holds until the next sample
        ([(0.0, 0), (0.5, 10)], 1.0, 5, 5),  # weighted by time inside one bucket
        ([(0.0, 4)], 30.0, 4, 4),  # a gap without samples means "unchanged", not "no data"
        ([(0.0, 0), (100.0, 100)], 103.0, 5, 50),  # a step: 3 s of 100 over 60 s and over 6 s
        ([(0.0, 0), (100.0, 6)], 106.5, 0.65, 6),  # the window's start cuts a bucket pro rata
        ([(0.0, 0), (100.0, 10), (101.0, 0)], 130.0, 10 / 60, 0),  # one second of 10, then idle
        ([(0.0, 0), (100.0, 10), (101.0, 0)], 160.5, 10 * 0.5 / 60, 0),  # half of it left
        ([(0.0, 0), (100.0, 10), (101.0, 0)], 161.0, 0, 0),  # expired from the stable window
        ([(0.0, 0), (100.0, 10), (101.0, 0)], 5000.0, 0, 0),  # long after
        ([(0.0, 0), (100.0, 10), (101.0, 0), (150.0, 0)], 150.0, 10 / 60, 0),  # idle ticks since: still in
        ([(0.0, 0), (100.0, 10), (101.0, 0), (170.0, 0)], 171.0, 0, 0),  # ...and out, the window all zero
        ([(0.0, 0), (50.0, 0)], 60.0, 0, 0),  # never busy
        ([(0.0, 2), (3.0, 8)], 4.0, 3.5, 3.5),  # less than a window seen: average since the first
        ([(0.0, 0), (10.0, 1), (10.5, 3), (11.2, 2), (12.0, 0)], 16.0, 4.2 / 16, 4.2 / 6),  # many changes
    ],
)
def test_the_window_averages_the_in_flight_count_weighted_by_time(samples, now, stable, panic):
    got = averages(window(*samples), now)
    assert got == (pytest.approx(stable), pytest.approx(panic))


def reference_averages(samples: list[tuple[float, float]], now: float, window_s: float) -> float:
    """The definition, from the samples themselves: the in-flight count integrated over
    [max(now - window_s, first sample), now], with time inside one bucket taken as uniform
    where the window's start cuts it (as the bucketed window must)."""
    first = samples[0][0]
    start = max(now - window_s, first)
    if now <= start:
        return samples[-1][1]
    area: dict[int, float] = {}  # bucket -> integral
    steps = [*samples, (now, 0.0)]
    for (t0, v), (t1, _) in zip(steps, steps[1:]):
        t = t0
        while t < t1:
            k = math.floor(t)
            end = min(t1, k + 1.0)
            area[k] = area.get(k, 0.0) + v * (end - t)
            t = end
    total = 0.0
    for k, a in area.items():
        begin, end = max(k, first), min(k + 1.0, now)
        if end <= start or end <= begin:
            continue
        total += a if begin >= start else a * (end - start) / (end - begin)
    return total / (now - start)


@pytest.mark.parametrize("seed", range(40))
def test_the_bucketed_averages_equal_the_definition_on_random_histories(seed):
    rng = random.Random(seed)
    t = rng.uniform(0, 50)
    samples = []
    for _ in range(rng.randint(1, 40)):
        t += rng.choice([rng.uniform(0, 0.4), rng.uniform(0, 4), rng.uniform(0, 40)])
        samples.append((t, rng.choice([0, 0, 1, 3, 7.5])))
    w = window(*samples)
    for now in (t, t + rng.uniform(0, 2), t + rng.uniform(0, 30), t + rng.uniform(50, 90)):
        stable, panic = averages(w, now)
        assert stable == pytest.approx(reference_averages(samples, now, 60.0), abs=1e-9)
        assert panic == pytest.approx(reference_averages(samples, now, 6.0), abs=1e-9)


def test_a_window_start_inside_a_bucket_is_off_by_at_most_one_bucket():
    w = window((0.0, 0), (100.25, 6))
    _, panic = averages(w, 106.25)
    assert panic == pytest.approx(6, abs=6 * SPEC.bucket_s / SPEC.panic_window_s)


def test_a_sample_in_the_same_bucket_copies_no_buckets():
    w = window((0.0, 1), (3.2, 2))
    assert record(w, 3.7, 5).closed is w.closed


def test_memory_stays_bounded_by_the_stable_window():
    w = MetricWindow.for_spec(SPEC)
    for i in range(20_000):
        w = record(w, i * 0.05, i % 7)
    assert len(w.closed) <= SPEC.stable_window_s / SPEC.bucket_s + 1
    stable, panic = averages(w, 1000.0)
    assert stable == pytest.approx(3, rel=0.05) and panic == pytest.approx(3, rel=0.05)


def test_a_sample_from_the_past_counts_as_now():
    w = window((10.0, 4), (9.0, 2))
    assert w.last_t == 10.0 and averages(w, 12.0) == (2, 2)


@pytest.mark.parametrize(
    ("samples", "now", "idle"),
    [
        ([(0.0, 3)], 50.0, 0.0),  # busy
        ([(0.0, 3), (10.0, 0)], 25.0, 15.0),  # idle since the count dropped to 0
        ([(0.0, 3), (10.0, 0), (20.0, 0)], 25.0, 15.0),  # repeated zeros do not restart it
        ([(0.0, 3), (10.0, 0), (20.0, 1), (21.0, 0)], 25.0, 4.0),  # one request restarts it
        ([(7.0, 0)], 25.0, 18.0),  # idle from the first sample
    ],
)
def test_idle_for_counts_seconds_since_the_last_request_ended(samples, now, idle):
    assert idle_for(window(*samples), now) == pytest.approx(idle)


def test_observed_from_window_gathers_averages_and_idle_time():
    w = window((0.0, 0), (100.0, 7), (103.0, 0))
    got = Observed.from_window(w, 108.0, ready_instances=2, pending_instances=1, queued_requests=0,
                               scale_to_zero_after_s=30.0)
    assert got == Observed(pytest.approx(21 / 60), pytest.approx(7 / 6), 2, 1, 0, pytest.approx(5.0), 30.0)


# --- scale(): the stable window ------------------------------------------------------------


@pytest.mark.parametrize(
    ("stable_avg", "concurrency", "desired"),
    [
        (7, 1, 10),  # 7 / 0.7 (and not 11 from float noise)
        (7.0001, 1, 11),  # any excess rounds up
        (100, 1, 143),  # 100 / 0.7 = 142.86
        (70, 10, 10),  # a target of 7 per instance
        (14, 10, 2),
        (14.1, 10, 3),
        (0.7, 1, 1),
        (0.71, 1, 2),
        (1, 1, 2),
        (0.01, 100, 1),  # any load needs an instance
    ],
)
def test_steady_load_sizes_to_concurrency_times_target_utilisation(stable_avg, concurrency, desired):
    spec = AutoscalerSpec(container_concurrency=concurrency)
    got = run(spec, [(0.0, Observed(stable_avg, stable_avg, ready_instances=desired))])[0]
    assert (got.desired_instances, got.panicking, got.reason) == (desired, False, Reason.STABLE)


def test_steady_load_stays_put_tick_after_tick():
    ticks = [(t * 2.0, Observed(35, 35, ready_instances=50)) for t in range(100)]
    assert {d.desired_instances for d in run(SPEC, ticks)} == {50}


# --- scale(): panic ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("panic_avg", "ready", "panicking"),
    [
        (13.3, 10, False),  # wants 19 < 2 x 10
        (14, 10, True),  # wants 20 = 2 x 10
        (40, 10, True),
        (1.4, 0, True),  # no instance counts as one: wants 2
        (0.7, 0, False),  # wants 1
    ],
)
def test_panic_starts_when_the_panic_window_wants_twice_the_ready_instances(panic_avg, ready, panicking):
    got = run(SPEC, [(0.0, Observed(stable_avg=ready * 0.7, panic_avg=panic_avg, ready_instances=ready))])[0]
    assert got.panicking is panicking
    if panicking:
        assert got.desired_instances == math.ceil(round(panic_avg / 0.7, 6)) and got.reason is Reason.PANIC


def test_panic_never_scales_down_and_holds_the_peak():
    ticks = [
        (0.0, Observed(7, 7, ready_instances=10)),
        (2.0, Observed(8, 21, ready_instances=10)),  # panic: 30
        (4.0, Observed(9, 28, ready_instances=30)),  # 40 wanted: up
        (6.0, Observed(9, 3, ready_instances=40)),  # 5 wanted: hold 40
        (30.0, Observed(2, 0, ready_instances=40)),
    ]
    got = [(d.desired_instances, d.panicking) for d in run(SPEC, ticks)]
    assert got == [(10, False), (30, True), (40, True), (40, True), (40, True)]


def test_panic_provisions_for_the_stable_window_when_it_wants_more():
    ticks = [(0.0, Observed(stable_avg=35, panic_avg=20, ready_instances=10))]
    got = run(SPEC, ticks)[0]
    assert (got.desired_instances, got.panicking) == (50, True)


@pytest.mark.parametrize(
    ("last_tick", "panicking", "desired"),
    [
        (61.9, True, 60),  # less than a stable window after the last tick over the threshold
        (62.0, False, 30),  # a stable window after it: stable mode, halving at most
    ],
)
def test_panic_ends_a_stable_window_after_the_last_tick_over_the_threshold(last_tick, panicking, desired):
    ticks = [
        (0.0, Observed(8, 21, ready_instances=10)),  # enters panic: 30
        (2.0, Observed(8, 42, ready_instances=30)),  # still over (60 = 2 x 30): extends it, 60
        (30.0, Observed(4, 3, ready_instances=60)),
        (last_tick, Observed(3.5, 3, ready_instances=60)),
    ]
    got = run(SPEC, ticks)
    assert [d.desired_instances for d in got[:3]] == [30, 60, 60]
    assert (got[-1].panicking, got[-1].desired_instances) == (panicking, desired)


def test_a_restarted_autoscaler_holds_the_current_scale_for_a_stable_window():
    state = AutoscalerState.restarted(ready_instances=20, now=100.0)
    ticks = [(102.0, Observed(0.5, 0.5, ready_instances=20)), (160.0, Observed(0.5, 0.5, ready_instances=20))]
    got = run(SPEC, ticks, state)
    assert [(d.desired_instances, d.panicking) for d in got] == [(20, True), (10, False)]
    assert AutoscalerState.restarted(ready_instances=1, now=100.0) == AutoscalerState()


# --- scale(): rates and clamps -------------------------------------------------------------


@pytest.mark.parametrize(
    ("up_rate", "ready", "stable_avg", "desired", "reason"),
    [
        (2.0, 3, 14, 6, Reason.SCALE_UP_RATE),  # wants 20, at most 2 x 3
        (2.0, 0, 14, 2, Reason.SCALE_UP_RATE),  # no instance counts as one
        (1.1, 2, 7, 3, Reason.SCALE_UP_RATE),  # ceil(1.1 x 2): always at least one more
        (1000.0, 1, 1400, 1000, Reason.SCALE_UP_RATE),
        (1000.0, 1, 700, 1000, Reason.STABLE),
    ],
)
def test_scale_up_is_limited_to_the_max_rate_per_tick(up_rate, ready, stable_avg, desired, reason):
    spec = AutoscalerSpec(max_scale_up_rate=up_rate, panic_threshold=10_000)  # no panic here
    got = run(spec, [(0.0, Observed(stable_avg, stable_avg, ready_instances=ready))])[0]
    assert (got.desired_instances, got.reason) == (desired, reason)


@pytest.mark.parametrize(
    ("down_rate", "ready", "pending", "desired"),
    [
        (2.0, 10, 0, 5),
        (2.0, 9, 0, 4),
        (2.0, 6, 4, 5),  # starting instances count: they were asked for
        (4.0, 10, 0, 2),
        (2.0, 5, 0, 2),
    ],
)
def test_scale_down_is_limited_to_the_max_rate_per_tick(down_rate, ready, pending, desired):
    spec = AutoscalerSpec(max_scale_down_rate=down_rate)
    got = run(spec, [(0.0, Observed(0.3, 0.3, ready_instances=ready, pending_instances=pending))])[0]
    assert (got.desired_instances, got.reason) == (desired, Reason.SCALE_DOWN_RATE)


def test_the_rates_apply_per_tick_however_often_scale_runs():
    ticks = [(0.0, Observed(0.3, 0.3, ready_instances=16)),
             (0.5, Observed(0.3, 0.3, ready_instances=8)),  # an off-cycle call in the same tick
             (1.9, Observed(0.3, 0.3, ready_instances=8)),
             (2.0, Observed(0.3, 0.3, ready_instances=8))]  # the next tick
    assert [d.desired_instances for d in run(SPEC, ticks)] == [8, 8, 8, 4]


@pytest.mark.parametrize(
    ("min_instances", "max_instances", "stable_avg", "ready", "desired", "reason"),
    [
        (3, None, 0.7, 3, 3, Reason.MIN_INSTANCES),
        (3, None, 0.0, 0, 3, Reason.MIN_INSTANCES),  # provisioned before any request
        (0, 5, 14, 5, 5, Reason.MAX_INSTANCES),
        (2, 5, 2.1, 3, 3, Reason.STABLE),
        (10, 10, 0.0, 10, 10, Reason.MIN_INSTANCES),
    ],
)
def test_desired_is_clamped_to_min_and_max_instances(min_instances, max_instances, stable_avg, ready, desired,
                                                     reason):
    spec = AutoscalerSpec(min_instances=min_instances, max_instances=max_instances).validate()
    got = run(spec, [(0.0, Observed(stable_avg, stable_avg, ready_instances=ready))])[0]
    assert (got.desired_instances, got.reason) == (desired, reason)


def test_min_instances_stay_warm_with_zero_load_long_after_the_keep_alive_window():
    spec = AutoscalerSpec(min_instances=2)
    ticks = [(t * 2.0, Observed(0, 0, ready_instances=2, idle_for_s=t * 2.0, scale_to_zero_after_s=10))
             for t in range(200)]
    assert {d.desired_instances for d in run(spec, ticks)} == {2}


def test_max_instances_caps_panic():
    spec = AutoscalerSpec(max_instances=25)
    got = run(spec, [(0.0, Observed(8, 70, ready_instances=10))])[0]
    assert (got.desired_instances, got.panicking, got.reason) == (25, True, Reason.MAX_INSTANCES)


# --- scale(): scale to zero ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("idle_for_s", "after_s", "queued", "desired", "reason"),
    [
        (0.0, 30.0, 0, 1, Reason.KEEP_WARM),
        (29.9, 30.0, 0, 1, Reason.KEEP_WARM),
        (30.0, 30.0, 0, 0, Reason.SCALE_TO_ZERO),
        (500.0, 30.0, 0, 0, Reason.SCALE_TO_ZERO),
        (500.0, math.inf, 0, 1, Reason.KEEP_WARM),  # no keep-alive window: never
        (500.0, 30.0, 1, 2, Reason.BURST),  # a waiting request is not idle
    ],
)
def test_the_last_instance_goes_only_after_the_keep_alive_window(idle_for_s, after_s, queued, desired,
                                                                 reason):
    observed = Observed(0, 0, ready_instances=1, queued_requests=queued, idle_for_s=idle_for_s,
                        scale_to_zero_after_s=after_s)
    got = run(SPEC, [(0.0, observed)])[0]
    assert (got.desired_instances, got.reason) == (desired, reason)


def test_a_keep_alive_window_shorter_than_the_stable_window_wins_over_the_lagging_average():
    observed = Observed(stable_avg=0.2, panic_avg=0, ready_instances=1, idle_for_s=10,
                        scale_to_zero_after_s=10)
    assert run(SPEC, [(0.0, observed)])[0].desired_instances == 0


def test_scale_to_zero_steps_down_at_the_max_rate():
    ticks = [(t * 2.0, Observed(0, 0, ready_instances=n, idle_for_s=100, scale_to_zero_after_s=30))
             for t, n in enumerate([8, 4, 2, 1, 0])]
    assert [d.desired_instances for d in run(SPEC, ticks)] == [4, 2, 1, 0, 0]


def test_a_function_without_instances_or_demand_stays_at_zero():
    got = run(SPEC, [(0.0, Observed(0, 0, ready_instances=0, idle_for_s=math.inf))])[0]
    assert (got.desired_instances, got.panicking, got.reason) == (0, False, Reason.STABLE)


# --- scale(): the activator's burst --------------------------------------------------------


@pytest.mark.parametrize(
    ("concurrency", "ready", "queued", "max_instances", "desired"),
    [
        (1, 0, 100, None, 100),  # a queue of 100 asks for 100 at once
        (1, 0, 100, 50, 50),  # capped by max instances
        (4, 0, 100, None, 25),
        (4, 0, 101, None, 26),
        (1, 5, 10, None, 15),  # the busy ready instances plus the queue's
        (1, 1, 99, None, 100),  # one warm instance, 99 waiting
    ],
)
def test_a_queue_asks_for_all_the_instances_it_needs_at_once(concurrency, ready, queued, max_instances,
                                                            desired):
    spec = AutoscalerSpec(container_concurrency=concurrency, max_instances=max_instances)
    got = run(spec, [(0.0, Observed(0, 0, ready_instances=ready, queued_requests=queued))])[0]
    assert got.desired_instances == desired and got.burst_desired >= desired


def test_a_burst_is_not_held_back_by_the_scale_up_rate():
    spec = AutoscalerSpec(max_scale_up_rate=2.0)
    got = run(spec, [(0.0, Observed(0, 0, ready_instances=1, queued_requests=99))])[0]
    assert (got.desired_instances, got.reason) == (100, Reason.BURST)


def test_a_large_burst_panics_so_the_next_tick_keeps_the_instances():
    ticks = [(0.0, Observed(0, 0, ready_instances=0, queued_requests=100)),
             (2.0, Observed(3.3, 33, ready_instances=100, queued_requests=0))]  # queue drained
    got = run(SPEC, ticks)
    assert [(d.desired_instances, d.panicking) for d in got] == [(100, True), (100, True)]


def test_a_small_queue_on_a_provisioned_function_is_a_one_tick_floor_not_a_panic():
    got = run(SPEC, [(0.0, Observed(2.8, 2.8, ready_instances=4, queued_requests=1))])[0]
    assert (got.desired_instances, got.panicking, got.reason) == (5, False, Reason.BURST)


# --- a simulation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_instances", "max_instances", "first_desired", "final_ready"),
    [
        (0, 200, 100, 143),  # from zero
        (1, 200, 100, 143),  # one provisioned instance
        (0, 50, 50, 50),  # capped: the other 50 clients wait in the queue
    ],
)
def test_a_step_to_100_clients_asks_for_100_instances_at_the_first_tick(min_instances, max_instances,
                                                                        first_desired, final_ready):
    """100 closed-loop clients start at t=31 s on a 50 ms function (concurrency 1); instances
    take 10 ms to start; the worker records in-flight + queued on every 10 ms step and ticks
    every 2 s."""
    spec = AutoscalerSpec(min_instances=min_instances, max_instances=max_instances).validate()
    w, state = MetricWindow.for_spec(spec), AutoscalerState()
    ready, starting = min_instances, deque()  # times the starting instances become ready
    running, queued = deque(), 0  # finish times of the running requests; requests waiting
    decisions = []
    for step in range(50 * 100):
        now = step / 100
        if step == 3100:
            queued += 100  # the step: 100 clients send their first request
        while running and running[0] <= now:
            running.popleft()
            queued += 1  # a closed-loop client sends its next request at once
        while starting and starting[0] <= now:
            starting.popleft()
            ready += 1
        take = min(queued, ready - len(running))
        running.extend([now + 0.05] * take)
        queued -= take
        w = record(w, now, len(running) + queued)
        if step % 200 == 0:
            observed = Observed.from_window(w, now, ready_instances=ready, pending_instances=len(starting),
                                            queued_requests=queued, scale_to_zero_after_s=600)
            decision, state = scale(spec, observed, state, now)
            decisions.append((now, decision))
            more = decision.desired_instances - ready - len(starting)
            starting.extend([now + 0.01] * max(0, more))
            ready -= min(max(0, -more), ready - len(running))  # stop idle instances only
    after = [(t, d) for t, d in decisions if t > 31]
    assert after[0][0] == 32.0 and after[0][1].desired_instances == first_desired
    assert all(d.desired_instances >= first_desired for _, d in after)
    assert ready == final_ready and queued == max(0, 100 - final_ready)
    assert all(d.desired_instances == min_instances for t, d in decisions if t < 31)


def test_the_worked_example_in_the_module_docstring_holds():
    assert doctest.testmod(autoscale).failed == 0


def test_the_worked_example_in_docs_scaling_md_holds():
    rows = [  # t, ready, stable avg, panic avg -> desired, reason
        (0, 10, 7, 7, 10, Reason.STABLE),
        (2, 10, 8, 21, 30, Reason.PANIC),
        (4, 30, 8, 3, 30, Reason.PANIC),
        (62, 30, 3.5, 3, 15, Reason.SCALE_DOWN_RATE),
        (64, 15, 3.4, 3, 7, Reason.SCALE_DOWN_RATE),
        (66, 7, 3.3, 3, 5, Reason.STABLE),
    ]
    got = run(SPEC, [(float(t), Observed(s, p, ready_instances=r)) for t, r, s, p, _, _ in rows])
    assert [(d.desired_instances, d.reason) for d in got] == [(want, why) for *_, want, why in rows]


# --- the keep-alive policy's decision as the autoscaler sees it ------------------------------

@pytest.mark.parametrize(
    ("window", "now", "expected"),
    [
        (None, 5.0, (math.inf, 0)),  # busy: the windows decide
        (autoscale.IdleWindow(0.0, 0.0, 600.0), 10.0, (600.0, 0)),  # keep loaded up to 600 s idle
        (autoscale.IdleWindow(0.0, 0.0, 0.0), 10.0, (0.0, 0)),  # no keep-alive: unload now
        (autoscale.IdleWindow(0.0, 300.0, 60.0), 10.0, (0.0, 0)),  # unloaded during the delay
        (autoscale.IdleWindow(0.0, 300.0, 60.0), 300.0, (0.0, 1)),  # prewarmed at the delay (inclusive)
        (autoscale.IdleWindow(0.0, 300.0, 60.0), 359.9, (0.0, 1)),
        (autoscale.IdleWindow(0.0, 300.0, 60.0), 360.0, (0.0, 0)),  # the window ends: unloaded again
    ],
)
def test_keep_alive_plan(window, now, expected):
    assert autoscale.keep_alive_plan(window, now) == expected


@pytest.mark.parametrize(
    ("desired", "floor", "min_i", "max_i", "expected"),
    [
        (0, 0, 0, None, 0),  # scaled to zero
        (0, 1, 0, None, 1),  # prewarmed by the keep-alive policy
        (5, 1, 0, None, 5),
        (0, 0, 2, None, 2),  # min instances are always kept
        (50, 0, 0, 10, 10),  # max instances cap everything
        (0, 1, 0, 1, 1),
    ],
)
def test_target_instances(desired, floor, min_i, max_i, expected):
    spec = AutoscalerSpec(min_instances=min_i, max_instances=max_i)
    decision = autoscale.Decision(desired, False, autoscale.Reason.STABLE)
    assert autoscale.target_instances(spec, decision, floor) == expected


def test_a_prewarm_window_brings_back_one_instance_of_a_function_scaled_to_zero():
    spec = AutoscalerSpec()
    window = autoscale.IdleWindow(idle_since=100.0, prewarm_delay_s=60.0, keepalive_s=30.0)
    state = AutoscalerState()
    targets = []
    for now in (102.0, 140.0, 161.0, 180.0, 195.0):
        # nothing in flight since t=100: the stable window is empty of demand by now
        after, floor = autoscale.keep_alive_plan(window, now)
        obs = Observed(0.0, 0.0, ready_instances=targets[-1] if targets else 1, idle_for_s=now - 100.0,
                       scale_to_zero_after_s=after)
        decision, state = scale(spec, obs, state, now)
        targets.append(autoscale.target_instances(spec, decision, floor))
    assert targets == [0, 0, 1, 1, 0]
