"""The pure membership policy: healthy, late, draining or lost, and what a scheduler must forget."""

from datetime import datetime, timedelta, timezone

import pytest

from mist.cluster.membership import (
    Assessment,
    Capacity,
    Changes,
    Health,
    HealthPolicy,
    MembershipSnapshot,
    WorkerInfo,
    WorkerRecord,
    assess,
    changes,
    health,
)

NOW = datetime(2026, 12, 1, 12, 0, 20, tzinfo=timezone.utc)
POLICY = HealthPolicy(interval_s=2, late_after_s=5, timeout_s=10)


def worker(wid="w1", silent_s=0.0, draining=False, incarnation=1):
    info = WorkerInfo(wid, f"{wid}:7070", Capacity(1024, 1000, 8))
    at = NOW - timedelta(seconds=silent_s)
    return WorkerRecord(info, incarnation, draining, at, at)


@pytest.mark.parametrize(
    ("silent_s", "draining", "expected"),
    [
        (0, False, Health.HEALTHY),
        (-0.5, False, Health.HEALTHY),  # a heartbeat stamped just after the snapshot's clock
        (4.99, False, Health.HEALTHY),
        (5, False, Health.LATE),
        (9.99, False, Health.LATE),
        (10, False, Health.LOST),
        (0, True, Health.DRAINING),
        (7, True, Health.DRAINING),  # draining and late: still draining, nothing new either way
        (10, True, Health.LOST),  # a draining worker that went silent is lost
        (3600, False, Health.LOST),
    ],
)
def test_health_by_silence_and_draining(silent_s, draining, expected):
    assert health(worker(silent_s=silent_s, draining=draining), NOW, POLICY) is expected


def test_the_worked_example_of_the_module_docstring():
    snap = MembershipSnapshot(
        NOW, (worker("w1", 1), worker("w2", 6, draining=True), worker("w3", 7), worker("w4", 11))
    )
    view = assess(snap, POLICY)
    assert [view.having(h) for h in Health] == [("w1",), ("w3",), ("w2",), ("w4",)]


@pytest.mark.parametrize(
    ("kw", "key"),
    [
        (dict(interval_s=0), "interval_s=0"),
        (dict(interval_s=5, late_after_s=5), "late_after_s=5"),
        (dict(late_after_s=12, timeout_s=10), "timeout_s=10"),
    ],
)
def test_an_inconsistent_policy_is_refused_naming_its_values(kw, key):
    with pytest.raises(ValueError, match=key):
        HealthPolicy(**kw)


def view(**workers):
    """Assessment from {id: (incarnation, Health)}."""
    return Assessment(NOW, {w: h for w, (_, h) in workers.items()}, {w: i for w, (i, _) in workers.items()})


H, L, LOST, D = Health.HEALTHY, Health.LATE, Health.LOST, Health.DRAINING


@pytest.mark.parametrize(
    ("before", "after", "joined", "forget"),
    [
        (view(), view(w1=(1, H)), ("w1",), ()),
        (view(w1=(1, H)), view(w1=(1, L)), (), ()),  # late keeps its instances
        (view(w1=(1, D)), view(w1=(1, LOST)), (), ("w1",)),
        (view(w1=(1, LOST)), view(w1=(1, LOST)), (), ()),  # forgotten once, not again
        (view(w1=(1, H)), view(w1=(2, H)), ("w1",), ("w1",)),  # restarted between two looks
        (view(w1=(1, LOST)), view(w1=(2, H)), ("w1",), ()),  # came back after being forgotten
        (view(w1=(1, H), w2=(3, H)), view(w2=(3, H)), (), ("w1",)),  # left the store
        (view(w1=(1, LOST)), view(), (), ()),
    ],
)
def test_what_a_scheduler_must_forget_between_two_looks(before, after, joined, forget):
    assert changes(before, after) == Changes(joined, forget)
