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
