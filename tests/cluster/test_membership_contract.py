"""The MembershipStore contract, against PostgreSQL and the in-memory fake (the `cluster`
fixture, heartbeat timeout 1 s: tests/cluster/conftest.py::POLICY)."""

from datetime import timedelta

from mist.cluster.membership import (
    Capacity,
    Health,
    Heartbeat,
    InstanceReport,
    Load,
    Warm,
    WorkerInfo,
    assess,
    changes,
)
from tests.cluster.conftest import POLICY

W1 = WorkerInfo("w1", "10.0.0.1:7070", Capacity(memory_mb=8192, cpu_millis=4000, slots=64), Warm(code=frozenset({"c1"})))
W2 = WorkerInfo("w2", "10.0.0.2:7070", Capacity(memory_mb=4096, cpu_millis=2000, slots=32))
BEAT = Heartbeat(
    Load(memory_used_mb=256, cpu_used_millis=500, slots_used=2, inflight=3),
    (InstanceReport("i1", "acme/hello", 3, 128, 1, 1), InstanceReport("i2", "resize", 1, 128, 4, 2, provisioned=True)),
    Warm(code=frozenset({"c1", "c2"}), layers=frozenset({"l1"}), zygotes=frozenset({"l1"})),
)


def test_a_registered_worker_is_healthy_with_what_it_said(cluster):
    rec = cluster.members.register(W1)
    assert (rec.id, rec.incarnation, rec.draining, rec.instances) == ("w1", 1, False, ())
    snap = cluster.members.snapshot()
    assert [w.info for w in snap.workers] == [W1]
    assert assess(snap, POLICY).health == {"w1": Health.HEALTHY}


def test_heartbeats_carry_load_instances_and_the_warm_set(cluster):
    rec = cluster.members.register(W1)
    assert cluster.members.heartbeat("w1", rec.incarnation, BEAT)
    (w,) = cluster.members.snapshot().workers
    assert (w.load, w.instances, w.info.warm) == (BEAT.load, BEAT.instances, BEAT.warm)
    assert w.info.capacity == W1.capacity and w.heartbeat_at >= rec.heartbeat_at


def test_a_silent_worker_turns_late_then_lost_by_the_stores_clock(cluster):
    r1, r2 = cluster.members.register(W1), cluster.members.register(W2)
    cluster.elapse(0.35)
    cluster.members.heartbeat("w2", r2.incarnation, BEAT)
    assert assess(cluster.members.snapshot(), POLICY).health == {"w1": Health.LATE, "w2": Health.HEALTHY}
    cluster.elapse(0.7)
    snap = cluster.members.snapshot()
    assert assess(snap, POLICY).health["w1"] is Health.LOST
    assert snap.now - r1.heartbeat_at >= timedelta(seconds=POLICY.timeout_s)


def test_a_lost_worker_is_refused_and_comes_back_as_a_new_incarnation(cluster):
    old = cluster.members.register(W1)
    cluster.members.heartbeat("w1", old.incarnation, BEAT)
    before = assess(cluster.members.snapshot(), POLICY)
    cluster.elapse(POLICY.timeout_s + 0.1)
    assert cluster.members.heartbeat("w1", old.incarnation, BEAT) is False
    lost = assess(cluster.members.snapshot(), POLICY)
    assert changes(before, lost).forget == ("w1",)
    new = cluster.members.register(W1)
    assert new.incarnation == old.incarnation + 1 and new.instances == ()
    back = assess(cluster.members.snapshot(), POLICY)
    assert back.health["w1"] is Health.HEALTHY
    assert changes(lost, back).joined == ("w1",) and changes(lost, back).forget == ()


def test_heartbeats_of_a_previous_incarnation_are_refused(cluster):
    old = cluster.members.register(W1)
    cluster.members.register(W1)  # it restarted
    assert cluster.members.heartbeat("w1", old.incarnation, BEAT) is False
    assert cluster.members.heartbeat("nobody", 1, BEAT) is False


def test_a_draining_worker_keeps_heartbeating_and_gets_nothing_new(cluster):
    rec = cluster.members.register(W1)
    assert cluster.members.set_draining("w1", True)
    assert cluster.members.heartbeat("w1", rec.incarnation, BEAT)
    assert assess(cluster.members.snapshot(), POLICY).having(Health.DRAINING) == ("w1",)
    cluster.members.set_draining("w1", False)
    assert assess(cluster.members.snapshot(), POLICY).having(Health.HEALTHY) == ("w1",)
    assert cluster.members.set_draining("nobody", True) is False


def test_a_worker_that_leaves_is_gone_and_only_its_own_incarnation_can_leave(cluster):
    rec = cluster.members.register(W1)
    assert cluster.members.leave("w1", rec.incarnation + 1) is False
    assert cluster.members.leave("w1", rec.incarnation) is True
    assert cluster.members.snapshot().workers == ()


def test_an_empty_snapshot_still_has_the_stores_time(cluster):
    first = cluster.members.snapshot()
    cluster.elapse(0.05)
    second = cluster.members.snapshot()
    assert first.workers == () and second.now > first.now
