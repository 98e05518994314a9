import doctest

import pytest

from mist.core import ratelimit
from mist.core.ratelimit import Bucket, FairQueue, RateLimit, take
from mist.errors import InvalidRequest


@pytest.mark.parametrize(
    ("limit", "bucket", "now", "expected"),
    [
        (RateLimit(1, 5), None, 0.0, (True, Bucket(4.0, 0.0), 0.0)),  # a new bucket is full
        (RateLimit(1, 5), Bucket(0.0, 0.0), 0.5, (False, Bucket(0.5, 0.5), 0.5)),
        (RateLimit(1, 5), Bucket(0.0, 0.0), 1.0, (True, Bucket(0.0, 1.0), 0.0)),
        (RateLimit(1, 5), Bucket(0.0, 0.0), 100.0, (True, Bucket(4.0, 100.0), 0.0)),  # refills up to the burst only
        (RateLimit(100, 1), Bucket(0.0, 10.0), 10.0, (False, Bucket(0.0, 10.0), 0.01)),
        (RateLimit(1, 5), Bucket(2.0, 10.0), 5.0, (True, Bucket(1.0, 5.0), 0.0)),  # clock stepped back: no refill
    ],
)
def test_token_bucket(limit, bucket, now, expected):
    allowed, after, wait = take(limit, bucket, now)
    assert (allowed, after.tokens, after.updated) == (expected[0], pytest.approx(expected[1].tokens), expected[1].updated)
    assert wait == pytest.approx(expected[2])


def test_sustained_rate_is_the_configured_rate():
    limit = RateLimit(rate_per_s=50, burst=10)
    bucket, allowed = None, 0
    for i in range(10_000):  # 1000 requests/s offered for 10 s
        ok, bucket, _ = take(limit, bucket, i / 1000)
        allowed += ok
    assert 500 <= allowed <= 510  # 50/s x 10 s, plus the initial burst


@pytest.mark.parametrize("limit", [RateLimit(0, 1), RateLimit(1, 0), RateLimit(-3, 2)])
def test_bad_limits_name_the_key(limit):
    with pytest.raises(InvalidRequest, match="rate limit: "):
        limit.validate()


def test_a_flooding_tenant_does_not_delay_another_beyond_one_turn():
    q: FairQueue[str] = FairQueue()
    for i in range(1000):
        q.push("flood", f"f{i}")
    served = []
    for step in range(20):
        q.push("quiet", f"q{step}")
        served.append(q.pop()[1])
        served.append(q.pop()[1])
    # every quiet request is served within the two pops after it arrived
    assert [s for s in served if s.startswith("q")] == [f"q{i}" for i in range(20)]


def test_weights_share_service_in_proportion_while_both_are_backlogged():
    q: FairQueue[int] = FairQueue()
    for i in range(300):
        q.push("gold", i, weight=3)
        q.push("basic", i, weight=1)
    first = [q.pop()[0] for _ in range(200)]
    assert first.count("gold") == 150 and first.count("basic") == 50


def test_an_idle_tenant_does_not_bank_credit():
    q: FairQueue[int] = FairQueue()
    for i in range(10):
        q.push("a", i)
    for _ in range(10):
        q.pop()
    # "b" was idle all along; now both send 5: they alternate, "b" does not get 10 in a row
    for i in range(5):
        q.push("a", i)
        q.push("b", i)
    assert [q.pop()[0] for _ in range(4)] == ["a", "b", "a", "b"]


def test_remove_and_counts():
    q: FairQueue[object] = FairQueue()
    x, y = object(), object()
    q.push("t", x)
    q.push("t", y)
    assert q.waiting("t") == 2 and q.remove("t", x) and not q.remove("t", x)
    assert q.pop() == ("t", y) and len(q) == 0 and q.waiting("t") == 0
    with pytest.raises(IndexError):
        q.pop()


def test_docstring_examples():
    assert doctest.testmod(ratelimit).failed == 0
