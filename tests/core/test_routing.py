import doctest

from mist.core import routing
from mist.core.placement import Need, WorkerReport, WorkerState
from mist.core.routing import InstanceTable

KEY = ("acme/f", 3)
NEED = Need("acme/f", memory_mb=128, code="c1")


def table(*reports, instances=None):
    t = InstanceTable()
    t.update(list(reports), instances or {})
    return t


def test_doctest():
    assert doctest.testmod(routing).failed == 0


def test_a_call_goes_to_a_free_warm_instance_before_starting_one():
    t = table(WorkerReport("w1", 1024), WorkerReport("w2", 4096), instances={"w1": {KEY: 1}})
    assert t.choose(KEY, NEED, 1).how == "warm"
    assert t.choose(KEY, NEED, 1).worker == "w1"


def test_warm_calls_go_to_the_least_busy_worker():
    t = table(WorkerReport("w1", 1024), WorkerReport("w2", 1024), instances={"w1": {KEY: 2}, "w2": {KEY: 2}})
    t.begin("w1", KEY)
    assert t.choose(KEY, NEED, 1).worker == "w2"
    t.begin("w2", KEY)
    t.begin("w2", KEY)
    assert t.choose(KEY, NEED, 1).worker == "w1"


def test_concurrent_calls_spread_new_instances_over_the_workers():
    t = table(WorkerReport("w1", 4096), WorkerReport("w2", 4096))
    seen = []
    for _ in range(6):
        c = t.choose(KEY, NEED, 1)
        t.begin(c.worker, KEY)
        seen.append(c.worker)
    assert seen.count("w1") == 3 and seen.count("w2") == 3


def test_draining_late_and_excluded_workers_get_no_call():
    t = table(WorkerReport("w1", 4096, state=WorkerState.DRAINING), WorkerReport("w2", 4096,
              state=WorkerState.UNHEALTHY), WorkerReport("w3", 4096), instances={"w1": {KEY: 5}, "w2": {KEY: 5}})
    assert t.choose(KEY, NEED, 1) == routing.Choice("w3", "new")
    t.exclude("w3")
    refused = t.choose(KEY, NEED, 1)
    assert refused.worker is None
    assert "0 healthy workers (1 draining, 2 unhealthy)" in refused.reason


def test_a_report_ends_an_exclusion():
    t = table(WorkerReport("w1", 4096))
    t.exclude("w1")
    assert t.choose(KEY, NEED, 1).worker is None
    t.update([WorkerReport("w1", 4096)], {})
    assert t.choose(KEY, NEED, 1).worker == "w1"


def test_calls_queue_on_busy_instances_when_no_worker_has_room():
    t = table(WorkerReport("w1", 128), WorkerReport("w2", 100), instances={"w1": {KEY: 1}})
    t.begin("w1", KEY)  # its one instance is busy, and w1's memory is taken by it
    t.update([WorkerReport("w1", 0), WorkerReport("w2", 100)], {"w1": {KEY: 1}})
    t.begin("w1", KEY)
    assert t.choose(KEY, NEED, 1) == routing.Choice("w1", "queue")


def test_a_forgotten_worker_takes_its_instances_and_calls_with_it():
    t = table(WorkerReport("w1", 4096), WorkerReport("w2", 4096), instances={"w1": {KEY: 1}})
    t.begin("w1", KEY)
    t.forget("w1")
    assert t.inflight("w1") == 0
    t.end("w1", KEY)  # the call's own end, after the loss: ignored
    assert t.choose(KEY, NEED, 1).worker == "w2"
    assert t.workers() == ["w2"]


def test_nowhere_says_how_to_get_a_worker():
    assert "mist worker --join" in table().choose(KEY, NEED, 1).reason
