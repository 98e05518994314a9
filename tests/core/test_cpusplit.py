"""The event loop's CPU apart from the sandboxes while it is busy: the pure policy."""

import math

import pytest

from mist.core.cpusplit import CpuSplitPolicy, Split, cpu_list, cpus_of, decide

P = CpuSplitPolicy(reserve_at=0.5, release_at=0.2, hold_s=5.0)
TOGETHER = Split(False, -math.inf)


@pytest.mark.parametrize(
    ("now", "busy", "current", "cpus", "expected"),
    [
        (10.0, 0.49, TOGETHER, 2, TOGETHER),  # below the threshold: nothing changes
        (10.0, 0.50, TOGETHER, 2, Split(True, 10.0)),  # at it: apart
        (10.0, 0.95, TOGETHER, 8, Split(True, 10.0)),
        (10.0, 0.95, TOGETHER, 1, TOGETHER),  # one CPU: never apart
        (10.0, 0.0, Split(True, 0.0), 1, Split(False, 10.0)),  # ... and back if it was (CPUs taken away)
        (12.0, 0.10, Split(True, 10.0), 2, Split(True, 10.0)),  # idle, but the change holds for 5 s
        (15.0, 0.10, Split(True, 10.0), 2, Split(False, 15.0)),  # then together again
        (20.0, 0.30, Split(True, 10.0), 2, Split(True, 10.0)),  # between the thresholds: stays apart
        (20.0, 0.20, Split(True, 10.0), 2, Split(False, 20.0)),
        (12.0, 0.90, Split(False, 10.0), 2, Split(False, 10.0)),  # busy again too soon: holds together
        (15.5, 0.90, Split(False, 10.0), 2, Split(True, 15.5)),
        (20.0, 0.40, Split(False, 10.0), 2, Split(False, 10.0)),  # between the thresholds: stays together
    ],
)
def test_decide(now, busy, current, cpus, expected):
    assert decide(P, now, busy, current, cpus) == expected


@pytest.mark.parametrize(("reserve_at", "release_at"), [(0.2, 0.5), (0.5, 0.5), (1.5, 0.2), (0.5, -0.1)])
def test_a_policy_whose_thresholds_would_flap_is_refused(reserve_at, release_at):
    with pytest.raises(ValueError, match="release_at < reserve_at"):
        CpuSplitPolicy(reserve_at=reserve_at, release_at=release_at)


@pytest.mark.parametrize(
    ("cpus", "split", "expected"),
    [
        ([0, 1], Split(True), ({0}, {1})),  # the loop takes the first CPU alone
        ([0, 1, 2, 3], Split(True), ({0}, {1, 2, 3})),
        ([2, 5, 7], Split(True), ({2}, {5, 7})),  # the CPUs mist may use, not 0..n
        ([0, 1], Split(False), ({0, 1}, {0, 1})),
        ([3], Split(True), ({3}, {3})),
    ],
)
def test_cpus_of(cpus, split, expected):
    assert cpus_of(cpus, split) == (frozenset(expected[0]), frozenset(expected[1]))


@pytest.mark.parametrize(
    ("cpus", "text"),
    [([0], "0"), ([0, 1], "0-1"), ([1, 2, 3, 5], "1-3,5"), ([7, 0, 2, 1], "0-2,7"), ([4, 6, 8], "4,6,8"), ([], "")],
)
def test_cpu_list(cpus, text):
    assert cpu_list(cpus) == text
