import random
import statistics
from collections import Counter

import pytest

from mist.errors import InvalidRequest
from mist.sim import load_azure2019, resolve, simulate
from mist.sim import synthetic
from mist.sim.synthetic import PERIODS_MIN, generate, write_azure2019


def gaps(times):
    times = sorted(times)
    return [b - a for a, b in zip(times, times[1:])]


def test_one_seed_gives_one_trace_and_another_seed_another():
    assert generate(5, 30) == generate(5, 30)
    assert generate(5, 30).functions != generate(6, 30).functions


def test_a_trace_needs_at_least_one_function():
    with pytest.raises(InvalidRequest, match="functions=0 is invalid: must be >= 1"):
        generate(1, 0)


def test_the_mix_matches_the_published_azure_figures():
    # Shahrad et al. 2020: 45 % of functions called at most once an hour on average, 81 % at most
    # once a minute; memory median ~140 MB (Burr fit); average duration median 0.68 s (log-normal fit)
    trace = generate(1, 400)
    calls = [f.invocations for f in trace.functions]
    assert 0.35 < sum(c <= 24 for c in calls) / len(calls) < 0.55
    assert 0.75 < sum(c <= 1440 for c in calls) / len(calls) < 0.92
    assert 110 < statistics.median(f.memory_mb for f in trace.functions) < 180
    assert 0.4 < statistics.median(f.duration_s for f in trace.functions) < 1.2


@pytest.mark.parametrize("seed", range(8))
def test_a_timer_fires_every_period_within_two_seconds_but_for_missed_firings(seed):
    times = synthetic._timer_once(random.Random(seed))
    if len(times) < 3:  # a daily timer fires once
        assert all(60 * max(PERIODS_MIN) > t >= 0 for t in times)
        return
    period = statistics.median(gaps(times))
    assert any(abs(period - 60 * p) <= 2 for p in PERIODS_MIN)
    on_time = [g for g in gaps(times) if abs(g - period) <= 2]
    assert len(on_time) >= 0.9 * len(gaps(times))


@pytest.mark.parametrize(
    ("kind", "check"),
    [
        # a Poisson process: exponential gaps, coefficient of variation ~1
        ("poisson", lambda g: len(g) < 500 or 0.85 < statistics.pstdev(g) / statistics.mean(g) < 1.15),
        # sessions of calls separated by heavy-tailed silences: far burstier than Poisson
        ("bursty", lambda g: len(g) < 20 or statistics.pstdev(g) / statistics.mean(g) > 1.5),
        # 1 to 12 calls, each with up to 2 retries
        ("rare", lambda g: len(g) + 1 <= 36),
    ],
)
@pytest.mark.parametrize("seed", range(6))
def test_each_kind_draws_its_own_arrival_process(kind, check, seed):
    times = [t for t in synthetic._ARRIVALS[kind](random.Random(seed)) if 0 <= t < synthetic.DAY_S]
    assert times and check(gaps(times))


@pytest.mark.parametrize("seed", range(6))
def test_a_diurnal_function_is_busier_at_some_hours_than_at_others(seed):
    times = synthetic.diurnal(random.Random(seed))
    per_hour = Counter(int(t // 3600) for t in times)
    hours = [per_hour.get(h, 0) for h in range(24)]
    assert len(times) < 200 or max(hours) >= 3 * (min(hours) + 1)


def test_a_written_trace_loads_back_as_it_was(tmp_path):
    trace = generate(3, 25)
    write_azure2019(trace, tmp_path / "syn_")
    loaded = load_azure2019(tmp_path / "syn_")
    assert [f.key for f in loaded.functions] == [f.key for f in trace.functions]
    assert [f.per_minute for f in loaded.functions] == [f.per_minute for f in trace.functions]
    assert [f.memory_mb for f in loaded.functions] == [f.memory_mb for f in trace.functions]
    assert [f.duration_s for f in loaded.functions] == pytest.approx([f.duration_s for f in trace.functions])


def test_mist_beats_fixed_60_on_cold_starts_and_the_hybrid_histogram_on_both_counts_off_the_sample():
    trace = generate(21, 12)
    mist, fixed60, hybrid = (simulate(trace, resolve(n)) for n in ("mist", "fixed:60", "hybrid-histogram"))
    assert mist.cold < fixed60.cold
    assert mist.cold < hybrid.cold and mist.wasted_gb_s < hybrid.wasted_gb_s
