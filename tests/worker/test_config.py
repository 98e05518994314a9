from pathlib import Path

import pytest

from mist.errors import InvalidRequest
from mist.worker import WorkerConfig


def test_defaults_are_valid():
    config = WorkerConfig(data_dir=Path("/srv/mist")).validate()
    assert (config.keepalive_policy, config.keepalive_s, config.prewarm, config.tmp_size_mb, config.pids_max) == (
        "mist", None, 2, 512, 64)


def test_the_default_memory_budget_is_three_quarters_of_the_machine():
    total_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal:"))
    assert WorkerConfig(data_dir=Path("/srv/mist")).validate().memory_budget_mb == total_kb * 3 // 4 // 1024


@pytest.mark.parametrize(
    ("key", "bad"),
    [("memory_budget_mb", 10), ("prewarm", -1), ("keepalive_s", -5.0), ("queue_limit", -1),
     ("pids_max", 1), ("tmp_size_mb", 0), ("uid_base", 0), ("python", "python3"),
     ("keepalive_policy", "forever"), ("prewarm_max", 1), ("autoscale_tick_s", 0), ("target_utilisation", 1.5),
     ("stable_window_s", 2.0)],
)
def test_validation_names_the_key_and_the_value(key, bad):
    with pytest.raises(InvalidRequest) as info:
        WorkerConfig(data_dir=Path("/srv/mist"), **{key: bad}).validate()
    assert key in str(info.value) and repr(bad) in str(info.value)


def test_relative_data_dir_is_rejected():
    with pytest.raises(InvalidRequest, match="data_dir must be an absolute path, got PosixPath\\('data'\\)"):
        WorkerConfig(data_dir=Path("data")).validate()


def test_uid_range_and_cgroup_tag_are_stable_per_data_dir_and_differ_between_them():
    a, b = WorkerConfig(data_dir=Path("/srv/a")), WorkerConfig(data_dir=Path("/srv/b"))
    assert a.first_uid == WorkerConfig(data_dir=Path("/srv/a")).first_uid >= 200_000
    assert (a.instance_tag, a.first_uid) != (b.instance_tag, b.first_uid)


@pytest.mark.parametrize(("given", "mode"), [("touched", "touched"), ("all", "all"), ("none", "none"),
                                             (True, "all"), (False, "none")])
def test_prefault_modes(given, mode):
    assert WorkerConfig(data_dir=Path("/srv/mist"), prefault=given).validate().prefault == mode


def test_prefault_default_copies_only_what_a_cold_start_touches():
    assert WorkerConfig(data_dir=Path("/srv/mist")).validate().prefault == "touched"
    with pytest.raises(InvalidRequest, match="prefault must be 'touched', 'all' or 'none', got 'some'"):
        WorkerConfig(data_dir=Path("/srv/mist"), prefault="some").validate()
