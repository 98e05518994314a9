import pytest

from mist.worker.cgroups import cfs_quota_us, cpu_shares, memory_writes


@pytest.mark.parametrize(("memory_mb", "shares"), [(128, 74), (1769, 1024), (3538, 2048), (1, 2), (64, 37)])
def test_cpu_shares_are_proportional_to_memory_with_a_floor(memory_mb, shares):
    assert cpu_shares(memory_mb) == shares


@pytest.mark.parametrize(("memory_mb", "quota"), [(128, 100_000), (1769, 100_000), (3538, 200_000), (10240, 578_858)])
def test_an_instance_gets_at_least_one_cpu_and_one_per_1769_mb(memory_mb, quota):
    assert cfs_quota_us(memory_mb) == quota


def test_raising_a_limit_writes_memsw_first():
    assert [f for f, _ in memory_writes(128, 512, memsw=True)] == ["memory.memsw.limit_in_bytes", "memory.limit_in_bytes"]


def test_lowering_or_first_limit_writes_memory_first():
    assert [f for f, _ in memory_writes(512, 128, memsw=True)] == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]
    assert [f for f, _ in memory_writes(None, 128, memsw=True)][0] == "memory.limit_in_bytes"


def test_limits_are_bytes_and_memsw_is_skipped_without_swap_accounting():
    assert memory_writes(None, 128, memsw=False) == [("memory.limit_in_bytes", str(128 * 1024 * 1024))]


def test_pids_limit_grows_with_handler_threads_only_for_concurrent_instances():
    from mist.worker.cgroups import pids_limit

    assert pids_limit(64, 1) == 64 and pids_limit(64, 10) == 74
