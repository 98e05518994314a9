import doctest

import pytest

from mist.core import retry
from mist.core.retry import Backoff, backoff_s
from mist.errors import InvalidRequest


@pytest.mark.parametrize(
    ("n", "draw", "policy", "expected"),
    [
        (1, 0.0, Backoff(), 0.5),  # never immediate: half the delay is kept
        (1, 0.5, Backoff(), 0.75),
        (2, 0.0, Backoff(), 1.0),
        (4, 0.0, Backoff(), 4.0),
        (4, 0.5, Backoff(), 6.0),
        (10, 0.0, Backoff(), 150.0),  # 512 capped at 300
        (50, 0.0, Backoff(), 150.0),
        (1000, 0.5, Backoff(), 225.0),  # no overflow for absurd retry counts
        (3, 0.0, Backoff(base_s=60, factor=2, cap_s=3600), 120.0),
        (3, 0.0, Backoff(base_s=5, factor=1, cap_s=5), 2.5),  # constant
    ],
)
def test_backoff_table(n, draw, policy, expected):
    assert backoff_s(n, draw=draw, policy=policy) == pytest.approx(expected)


def test_delays_grow_until_the_cap_whatever_the_draws():
    lows = [backoff_s(n, draw=0.0) for n in range(1, 12)]
    highs = [backoff_s(n, draw=0.999999) for n in range(1, 12)]
    assert lows == sorted(lows)
    assert all(high <= 300.0 for high in highs)
    assert all(lo <= hi for lo, hi in zip(lows, highs))


@pytest.mark.parametrize(("n", "draw"), [(0, 0.5), (1, 1.0), (1, -0.1)])
def test_bad_arguments_are_refused(n, draw):
    with pytest.raises(ValueError):
        backoff_s(n, draw=draw)


@pytest.mark.parametrize("policy", [Backoff(base_s=0), Backoff(factor=0.5), Backoff(base_s=10, cap_s=5)])
def test_bad_policies_name_the_key(policy):
    with pytest.raises(InvalidRequest, match="backoff: "):
        policy.validate()


def test_worked_example():
    assert doctest.testmod(retry).failed == 0
