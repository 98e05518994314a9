import pytest

from mist.worker.lifecycle import State
from mist.worker.policy import InstanceView, Placement, place, pool_deficit

F1 = ("f", 1)


def inst(id, key=F1, state=State.IDLE, in_flight=0, concurrency=1, memory_mb=128, last_used=0.0, retiring=False):
    return InstanceView(id, key, state, in_flight, concurrency, memory_mb, last_used, retiring)


def test_uses_the_idle_instance_of_the_same_version():
    assert place(F1, 128, [inst("a")], free_mb=0, pool_size=0, pool_mb=128) == Placement("use", "a")


def test_prefers_the_most_recently_used_idle_instance_so_others_can_idle_out():
    got = place(F1, 128, [inst("old", last_used=1), inst("new", last_used=9)], free_mb=0, pool_size=0, pool_mb=128)
    assert got.instance_id == "new"


def test_packs_concurrent_invocations_into_the_fullest_instance():
    views = [inst("a", state=State.BUSY, in_flight=1, concurrency=4), inst("b", state=State.BUSY, in_flight=3, concurrency=4)]
    assert place(F1, 128, views, free_mb=0, pool_size=0, pool_mb=128).instance_id == "b"


def test_prefers_a_ready_instance_over_one_still_initializing():
    views = [inst("init", state=State.INITIALIZING, in_flight=1, concurrency=4),
             inst("ready", state=State.BUSY, in_flight=1, concurrency=4)]
    assert place(F1, 128, views, free_mb=0, pool_size=0, pool_mb=128).instance_id == "ready"


def test_never_uses_another_version_a_full_instance_or_a_retiring_one():
    views = [inst("v2", key=("f", 2)), inst("full", state=State.BUSY, in_flight=1), inst("old", retiring=True)]
    assert place(F1, 128, views, free_mb=1024, pool_size=0, pool_mb=128) == Placement("start")


def test_starts_from_the_pool_when_one_is_prewarmed():
    assert place(F1, 256, [], free_mb=128, pool_size=1, pool_mb=128) == Placement("start", from_pool=True)


def test_network_functions_skip_the_pool():
    assert place(F1, 128, [], free_mb=512, pool_size=2, pool_mb=128, pool_usable=False) == Placement("start")


def test_worked_example_evicts_the_other_prewarmed_sandbox_to_make_room():
    views = [inst("busy", state=State.BUSY, in_flight=1, memory_mb=256)]
    got = place(F1, 256, views, free_mb=0, pool_size=2, pool_mb=128)
    assert got == Placement("start", from_pool=True, evict_pool=1)


def test_evicts_least_recently_used_idle_instances_of_other_functions():
    views = [inst("recent", key=("g", 1), last_used=9), inst("stale", key=("h", 1), last_used=1),
             inst("busy", key=("g", 1), state=State.BUSY, in_flight=1)]
    got = place(F1, 128, views, free_mb=0, pool_size=0, pool_mb=128)
    assert got == Placement("start", evict=("stale",))


class Untouchable:
    """Other functions' instances that must not be looked at."""

    def __iter__(self):
        raise AssertionError("the other functions' instances were read")


@pytest.mark.parametrize(
    ("own", "free_mb", "pool_size", "expected"),
    [
        ([inst("a")], 0, 0, Placement("use", "a")),  # a free slot
        ([], 1024, 0, Placement("start")),  # budget left
        ([], 0, 1, Placement("start", from_pool=True)),  # a prewarmed sandbox
        ([inst("b", state=State.BUSY, in_flight=1)], 128, 0, Placement("start")),
    ],
)
def test_a_placement_within_the_budget_reads_only_the_functions_own_instances(own, free_mb, pool_size, expected):
    got = place(F1, 128, own, free_mb=free_mb, pool_size=pool_size, pool_mb=128, others=Untouchable())
    assert got == expected


def test_the_other_functions_instances_given_apart_are_evicted_as_if_given_together():
    others = [inst("recent", key=("g", 1), last_used=9), inst("stale", key=("h", 1), last_used=1)]
    own = [inst("busy", state=State.BUSY, in_flight=1), inst("old", state=State.IDLE, retiring=True, last_used=0)]
    apart = place(F1, 256, own, free_mb=0, pool_size=0, pool_mb=128, others=iter(others))
    together = place(F1, 256, own + others, free_mb=0, pool_size=0, pool_mb=128)
    assert apart == together == Placement("start", evict=("old", "stale"))


def test_waits_when_nothing_can_be_freed_and_evicts_nothing():
    views = [inst("busy", key=("g", 1), state=State.BUSY, in_flight=1, memory_mb=1024)]
    assert place(F1, 512, views, free_mb=256, pool_size=0, pool_mb=128) == Placement("wait")


@pytest.mark.parametrize(
    ("target", "have", "free_mb", "waiting", "expected"),
    [(2, 0, 4096, 0, 2), (2, 1, 4096, 0, 1), (2, 2, 4096, 0, 0), (3, 0, 200, 0, 1), (2, 0, 4096, 1, 0), (2, 5, 4096, 0, 0)],
)
def test_pool_refills_to_target_within_budget_and_yields_to_waiters(target, have, free_mb, waiting, expected):
    assert pool_deficit(target, have, free_mb=free_mb, pool_mb=128, waiting=waiting) == expected


def test_max_instances_makes_a_new_invocation_wait_instead_of_starting_another():
    busy = [inst("a", state=State.BUSY, in_flight=1), inst("b", state=State.BUSY, in_flight=1)]
    assert place(F1, 128, busy, free_mb=4096, pool_size=1, pool_mb=128, max_instances=2) == Placement("wait")
    assert place(F1, 128, busy, free_mb=4096, pool_size=1, pool_mb=128, max_instances=3).action == "start"


def test_instances_still_starting_count_toward_max_instances():
    busy = [inst("a", state=State.BUSY, in_flight=1)]
    assert place(F1, 128, busy, free_mb=4096, pool_size=0, pool_mb=128, max_instances=2, starting=1).action == "wait"


def test_max_instances_counts_only_this_functions_live_instances():
    others = [inst("x", key=("g", 1), state=State.BUSY, in_flight=1), inst("r", state=State.BUSY, in_flight=1, retiring=True)]
    assert place(F1, 128, others, free_mb=4096, pool_size=0, pool_mb=128, max_instances=1).action == "start"


@pytest.mark.parametrize(
    ("idle", "live", "min_instances", "gone"),
    [
        (["a", "b"], 2, 0, ["a", "b"]),  # no minimum: every expired instance goes
        (["a", "b"], 2, 1, ["a"]),  # one kept: the least recently used goes first
        (["a", "b"], 3, 2, ["a"]),  # a busy third counts toward the minimum
        (["a"], 1, 1, []),  # the provisioned one stays
        (["a", "b"], 2, 5, []),  # below the minimum already: nothing goes
    ],
)
def test_reclaiming_keeps_min_instances(idle, live, min_instances, gone):
    from mist.worker.policy import reclaimable

    views = [inst(i, last_used=n) for n, i in enumerate(idle)]
    assert reclaimable(views, live, min_instances) == gone


@pytest.mark.parametrize(
    ("last_used", "min_idle_s", "gone"),
    [
        ({"a": 99.0, "b": 99.5}, 6.0, []),  # a serving function's instances, used a moment ago, stay
        ({"a": 90.0, "b": 99.5}, 6.0, ["a"]),  # one idle for 10 s goes
        ({"a": 99.0, "b": 99.5}, 0.0, ["a", "b"]),  # no protection (the function is idle): target rules
    ],
)
def test_instances_a_serving_function_used_just_now_are_not_reclaimed(last_used, min_idle_s, gone):
    from mist.worker.policy import reclaimable

    views = [inst(i, last_used=t) for i, t in last_used.items()]
    assert reclaimable(views, 4, 2, now=100.0, min_idle_s=min_idle_s) == gone


@pytest.mark.parametrize(
    ("recent", "minimum", "maximum", "expected"),
    [
        ([], 2, 32, 2),  # nothing recent: the configured minimum
        ([0, 1, 0], 2, 32, 2),
        ([0, 30, 4], 2, 32, 30),  # the busiest second of the window
        ([100], 2, 32, 32),  # capped
        ([5], 0, 0, 0),  # prewarming disabled
    ],
)
def test_pool_follows_the_recent_cold_start_rate(recent, minimum, maximum, expected):
    from mist.worker.policy import pool_target

    assert pool_target(recent, minimum=minimum, maximum=maximum) == expected
