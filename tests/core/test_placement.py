import doctest
import random

import pytest

from mist.core import placement
from mist.core.placement import Cluster, Need, PlacementConfig, WorkerReport, WorkerState
from mist.errors import InvalidRequest

GB = 1024
L = frozenset({"L"})


def worker(id, free=4 * GB, *, total=8 * GB, cpu=4000, slots=100, state=WorkerState.HEALTHY,
           code=(), layers=(), zygotes=(), running=None):
    return WorkerReport(id, free, total, cpu, slots, state, frozenset(code), frozenset(layers) | frozenset(zygotes),
                        frozenset(zygotes), running or {})


def need(fn="f", memory=256, *, code="c1", layer="L", cpu=0):
    return Need(fn, memory, code, layer, cpu)


def place_all(cluster, wanted, times):
    return [cluster.reserve(cluster.place(wanted), wanted).worker for _ in range(times)]


@pytest.mark.parametrize(
    ("reports", "expected", "warm"),
    [
        # the layer's zygote beats an installed layer, which beats the code alone, which beats nothing
        ([worker("a"), worker("b", code={"c1"}), worker("c", layers={"L"}), worker("d", zygotes={"L"})],
         "d", ("zygote", "layer")),
        ([worker("a"), worker("b", code={"c1"}), worker("c", layers={"L"})], "c", ("layer",)),
        ([worker("a"), worker("b", code={"c1"})], "b", ("code",)),
        # with the zygote on both, the code decides
        ([worker("a", zygotes={"L"}), worker("b", zygotes={"L"}, code={"c1"})], "b", ("zygote", "layer", "code")),
        # a zygote of another layer is worth nothing
        ([worker("a", zygotes={"M"}), worker("b", layers={"L"})], "b", ("layer",)),
        # equally warm: the one with more memory free
        ([worker("a", 2 * GB, zygotes={"L"}), worker("b", 3 * GB, zygotes={"L"})], "b", ("zygote", "layer")),
    ],
)
def test_the_warmest_worker_gets_the_instance(reports, expected, warm):
    decision = Cluster(reports).place(need())
    assert (decision.worker, decision.warm) == (expected, warm)


def test_a_function_without_dependencies_goes_where_its_code_is():
    decision = Cluster([worker("a", 8 * GB), worker("b", 1 * GB, code={"c1"})]).place(need(layer=None))
    assert (decision.worker, decision.warm) == ("b", ("zygote", "layer", "code"))


@pytest.mark.parametrize("state", [WorkerState.DRAINING, WorkerState.UNHEALTHY])
def test_a_draining_or_unhealthy_worker_gets_nothing_however_warm_and_empty(state):
    cluster = Cluster([worker("a", 64 * GB, zygotes={"L"}, code={"c1"}, state=state), worker("b", 1 * GB)])
    assert place_all(cluster, need(), 4) == ["b", "b", "b", "b"]
    assert not cluster.place(need()).ok


@pytest.mark.parametrize(
    ("short", "reason"),
    [
        (dict(free=200), "no healthy worker has 256 MB of memory free"),
        (dict(cpu=100), "1 lack CPU"),
        (dict(slots=0), "1 lack a free sandbox slot"),
    ],
)
def test_a_worker_short_of_memory_cpu_or_slots_is_passed_over(short, reason):
    cluster = Cluster([worker("a", zygotes={"L"}, **short), worker("b")])
    assert cluster.place(need(cpu=500)).worker == "b"
    lone = Cluster([worker("a", zygotes={"L"}, **short)])
    decision = lone.place(need(cpu=500))
    assert not decision.ok and reason in decision.reason


@pytest.mark.parametrize(
    ("reports", "wanted", "says"),
    [
        ([], need(), "0 healthy workers (0 draining, 0 unhealthy); start a worker"),
        ([worker("a", state=WorkerState.DRAINING), worker("b", state=WorkerState.UNHEALTHY)], need(),
         "0 healthy workers (1 draining, 1 unhealthy)"),
        ([worker("a", total=8 * GB)], need(memory=10 * GB), "none is that big (the largest has 8192 MB in all)"),
        ([worker("a", 1 * GB), worker("b", 2 * GB)], need(memory=3 * GB),
         "no healthy worker has 3072 MB of memory free (the most is 2048 MB)"),
        ([worker("a", 100), worker("b", cpu=10)], need(cpu=500), "1 lack memory, 1 lack CPU"),
    ],
)
def test_when_nothing_fits_the_reason_says_why_and_what_to_do(reports, wanted, says):
    decision = Cluster(reports).place(wanted)
    assert decision.worker is None
    assert decision.reason.startswith(f"no worker can take {wanted.function} ({wanted.memory_mb} MB")
    assert says in decision.reason


def test_instances_of_one_function_spread_before_they_pile_up():
    cluster = Cluster([worker(w, zygotes={"L"} if w == "a" else ()) for w in "abcd"], PlacementConfig(max_skew=1))
    placed = place_all(cluster, need(), 8)
    assert placed[0] == "a"  # the warm one first
    assert sorted(placed) == ["a", "a", "b", "b", "c", "c", "d", "d"]
    assert sorted(placed[:4]) == ["a", "b", "c", "d"]  # each got one before any got two


def test_the_default_skew_lets_two_instances_share_the_warm_worker_first():
    cluster = Cluster([worker("a", zygotes={"L"})] + [worker(w) for w in "bcd"])
    assert place_all(cluster, need(), 3)[:2] == ["a", "a"]


def test_instances_already_running_count_towards_the_spread():
    cluster = Cluster([worker("a", zygotes={"L"}, running={"f": 2}), worker("b")], PlacementConfig(max_skew=1))
    assert cluster.place(need()).worker == "b"


def test_a_crowded_worker_is_used_when_it_is_the_only_one_with_room():
    cluster = Cluster([worker("a", running={"f": 5}), worker("b", 100)], PlacementConfig(max_skew=1))
    assert cluster.place(need()).worker == "a"


def test_reserve_books_the_memory_so_the_next_decision_sees_it():
    cluster = Cluster([worker("a", 512)])
    assert place_all(cluster, need(), 3) == ["a", "a", None]
    assert cluster.statistics().refusals == 1


def test_a_placed_instance_makes_the_worker_warm_for_the_next_one():
    cluster = Cluster([worker("a", 1 * GB), worker("b", 2 * GB)], PlacementConfig(max_skew=5))
    assert cluster.reserve(cluster.place(need()), need()).worker == "b"  # cold: more memory free
    second = cluster.place(need())
    assert (second.worker, second.warm) == ("b", ("zygote", "layer", "code"))


def test_one_worker_with_room_among_many_full_ones_is_found():
    reports = [worker(f"w{i:03d}", 100, zygotes={"L"}) for i in range(300)] + [worker("w300", 1 * GB)]
    cluster = Cluster(reports)
    assert cluster.place(need()).worker == "w300"
    assert cluster.statistics().scans == 1


def test_decisions_do_not_depend_on_the_order_of_the_reports():
    rng = random.Random(7)
    reports = [worker(f"w{i}", rng.choice([1, 2, 4]) * GB, zygotes={"L"} if rng.random() < 0.3 else (),
                      code={"c1"} if rng.random() < 0.2 else ()) for i in range(50)]
    needs = [need(f"f{rng.randrange(20)}", rng.choice([128, 256, 512])) for _ in range(300)]
    shuffled = reports[:]
    rng.shuffle(shuffled)
    first, second = Cluster(reports), Cluster(shuffled)
    assert [first.reserve(first.place(n), n) for n in needs] == [second.reserve(second.place(n), n) for n in needs]


def test_different_functions_start_on_different_workers():
    cluster = Cluster([worker(f"w{i}", 64 * GB) for i in range(10)])
    firsts = [cluster.reserve(cluster.place(need(f"f{i}", code=f"c{i}", layer=None)), need(f"f{i}")).worker
              for i in range(100)]
    counts = sorted(firsts.count(f"w{i}") for i in range(10))
    assert counts[0] >= 3 and counts[-1] <= 25


@pytest.mark.parametrize(
    ("config", "key"),
    [(PlacementConfig(max_skew=0), "max_skew"), (PlacementConfig(choices=0), "choices"),
     (PlacementConfig(probes=1, choices=2), "probes")],
)
def test_a_bad_config_names_the_key(config, key):
    with pytest.raises(InvalidRequest, match=f"placement: {key}"):
        config.validate()


def test_two_reports_of_one_worker_are_refused():
    with pytest.raises(InvalidRequest, match="same worker id"):
        Cluster([worker("a"), worker("a")])


def test_worked_example():
    assert doctest.testmod(placement).failed == 0
