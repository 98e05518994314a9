"""Which layer zygotes are evicted: idle ones, then the least recently used over the count or
memory limit, never a busy one."""

import pytest

from mist.worker.layerpolicy import ZygoteView, evictions


def z(key: str, memory_mb: float, last_used: float, busy: bool = False) -> ZygoteView:
    return ZygoteView(key, memory_mb, last_used, busy)


LIMITS = dict(memory_limit_mb=300, max_zygotes=2, idle_s=600)


@pytest.mark.parametrize(("zygotes", "incoming", "expected"), [
    pytest.param([], 0, (), id="nothing"),
    pytest.param([z("a", 100, 900), z("b", 100, 950)], 0, (), id="within every limit"),
    pytest.param([z("a", 100, 400), z("b", 100, 950)], 0, ("a",), id="idle for idle_s"),
    pytest.param([z("a", 100, 399.9), z("b", 100, 950)], 0, ("a",), id="idle just over idle_s"),
    pytest.param([z("a", 100, 400.1), z("b", 100, 950)], 0, (), id="idle just under idle_s"),
    pytest.param([z("a", 10, 700), z("b", 10, 900), z("c", 10, 800)], 0, ("a",), id="over the count: LRU first"),
    pytest.param([z("a", 10, 700), z("b", 10, 900)], 1, ("a",), id="room for an incoming one"),
    pytest.param([z("a", 200, 700), z("b", 200, 900)], 0, ("a",), id="over the memory limit"),
    pytest.param([z("a", 200, 700, busy=True), z("b", 200, 900)], 0, ("b",), id="a busy one is skipped"),
    pytest.param([z("a", 200, 100, busy=True), z("b", 50, 900)], 0, (), id="busy is never idle"),
    pytest.param([z("a", 100, 100), z("b", 150, 700), z("c", 120, 900), z("d", 90, 950, busy=True)], 0,
                 ("a", "b"), id="the docstring's worked example"),
    pytest.param([z("a", 400, 700, busy=True)], 0, (), id="nothing to do about a busy one alone"),
])
def test_evictions(zygotes, incoming, expected):
    assert evictions(zygotes, 1000.0, incoming=incoming, **LIMITS) == expected


def test_a_zygote_used_just_now_is_kept_while_older_ones_go_over_memory():
    zygotes = [z("old", 500, 10), z("older", 500, 5), z("new", 500, 999)]
    assert evictions(zygotes, 1000.0, memory_limit_mb=600, max_zygotes=8, idle_s=10_000) == ("older", "old")
