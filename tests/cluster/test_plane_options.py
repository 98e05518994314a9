import pytest

from mist.cluster.plane import ClusterOptions
from mist.errors import InvalidRequest


def test_the_cluster_options_name_what_is_wrong():
    with pytest.raises(InvalidRequest, match="--cluster-listen must be HOST:PORT, got '7070'"):
        ClusterOptions("7070", "x" * 24).validate()
    with pytest.raises(InvalidRequest, match="at least 16 characters"):
        ClusterOptions("0.0.0.0:7070", "short").validate()
    with pytest.raises(InvalidRequest, match="--worker-timeout must be >= 1 s"):
        ClusterOptions("0.0.0.0:7070", "x" * 24, worker_timeout_s=0.5).validate()


def test_workers_heartbeat_five_times_per_timeout_and_are_late_after_half_of_it():
    policy = ClusterOptions("0.0.0.0:7070", "x" * 24, worker_timeout_s=10).validate().policy
    assert (policy.interval_s, policy.late_after_s, policy.timeout_s) == (2.0, 5.0, 10.0)


def test_functions_on_a_worker_are_kept_off_the_control_plane_and_the_agent():
    from mist.cluster.node import cluster_hosts

    assert cluster_hosts("http://10.0.0.1:7070", "http://10.0.0.2:7071") == ("10.0.0.1/32", "10.0.0.2/32")
    assert cluster_hosts("http://localhost:7070", "http://127.0.0.1:7071") == ("127.0.0.1/32",)
    assert cluster_hosts("http://0.0.0.0:7071") == ()


def test_a_restarted_control_planes_epochs_are_above_its_predecessors():
    from mist.cluster.plane import memory_stores

    _, before = memory_stores(10)
    old = [before.acquire(f"shard/{n}", "cp-1", 5).epoch for n in range(16)]
    for _ in range(3):  # leases lost and taken again: epochs move on
        before.release(before.current("shard/0"))
        old.append(before.acquire("shard/0", "cp-1", 5).epoch)
    _, after = memory_stores(10)  # the control plane restarted
    assert after.acquire("shard/0", "cp-1", 5).epoch > max(old)


def test_schedulers_sharing_a_database_must_say_where_the_others_reach_them():
    db = "postgresql+psycopg://db/mist"
    with pytest.raises(InvalidRequest, match="pass --cluster-advertise http://THIS-HOST:PORT"):
        ClusterOptions("0.0.0.0:7070", "x" * 24, db=db).validate()
    assert ClusterOptions("0.0.0.0:7070", "x" * 24, db=db, advertise="http://10.0.0.1:7070/").validate().url == \
        "http://10.0.0.1:7070"
    assert ClusterOptions("10.0.0.1:7070", "x" * 24, db=db).validate().url == "http://10.0.0.1:7070"
    with pytest.raises(InvalidRequest, match="--shard-lease-ttl must be >= 0.5 s, got 0.1"):
        ClusterOptions("10.0.0.1:7070", "x" * 24, db=db, lease_ttl_s=0.1).validate()
