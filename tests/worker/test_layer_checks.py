"""The pure parts of the zygote tree: which names a layer zygote imports, and how the zygote
reads /proc to accept or refuse a layer zygote's child."""

from pathlib import Path

import pytest

from mist.errors import InvalidRequest
from mist.worker import WorkerConfig
from mist.worker.layerzygote import import_layer, top_level_names
from mist.worker.spawner import layer_settings
from mist.worker.verify import cgroup_problems, expected_groups, fd_problems, maps_problems, status_problems


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_names_come_from_top_level_txt(tmp_path):
    write(tmp_path, {"six-1.0.dist-info/top_level.txt": "six\n", "six.py": "",
                     "yaml-6.dist-info/top_level.txt": "_yaml\nyaml\n", "yaml/__init__.py": ""})
    assert top_level_names(tmp_path) == ["six", "yaml"]


def test_names_come_from_record_without_top_level_txt(tmp_path):
    record = "\n".join([
        "numpy/__init__.py,sha256=x,1", "numpy/core/_multiarray_umath.cpython-311-x86_64-linux-gnu.so,,",
        "numpy.libs/libopenblas.so,,", "numpy-2.4.6.dist-info/RECORD,,", "../../bin/f2py,,", "bin/f2py,,",
        "typing_extensions.py,,", "_cffi_backend.cpython-311-x86_64-linux-gnu.so,,", "tests/test_x.py,,",
        "fastjson.cpython-311-x86_64-linux-gnu.so,,", "README.txt,,",
    ])
    write(tmp_path, {"numpy-2.4.6.dist-info/RECORD": record})
    assert top_level_names(tmp_path) == ["fastjson", "numpy", "typing_extensions"]


def test_names_come_from_the_directory_when_no_distribution_claims_it(tmp_path):
    write(tmp_path, {"greeting/__init__.py": "", "notapackage/data.txt": "", "helper.py": "", "native.so": "",
                     "class.py": "", "_private.py": ""})
    assert top_level_names(tmp_path) == ["greeting", "helper", "native"]


def test_import_layer_reports_failures_and_goes_on(tmp_path, monkeypatch):
    write(tmp_path, {"zt_good_a.py": "X = 1\n", "zt_raises.py": "raise ValueError('no config')\n",
                     "zt_exits.py": "raise SystemExit(3)\n", "zt_good_b.py": ""})
    monkeypatch.syspath_prepend(str(tmp_path))
    imported, skipped = import_layer(["zt_good_a", "zt_raises", "zt_exits", "zt_missing", "zt_good_b"])
    assert imported == ["zt_good_a", "zt_good_b"]
    assert skipped == {"zt_raises": "ValueError: no config", "zt_exits": "SystemExit: 3",
                       "zt_missing": "ModuleNotFoundError: No module named 'zt_missing'"}


GOOD_STATUS = """Name:\tpython3.11
Uid:\t200001\t200001\t200001\t200001
Gid:\t200001\t200001\t200001\t200001
Groups:\t
NSpid:\t4242\t1
Threads:\t1
CapInh:\t0000000000000000
CapPrm:\t0000000000000000
CapEff:\t0000000000000000
CapBnd:\t0000000000000000
CapAmb:\t0000000000000000
NoNewPrivs:\t1
Seccomp:\t2
Seccomp_filters:\t2
"""


def test_a_locked_down_child_passes():
    assert status_problems(GOOD_STATUS, 200001) == []


@pytest.mark.parametrize(("old", "new", "problem"), [
    ("Uid:\t200001\t200001\t200001\t200001", "Uid:\t200001\t0\t200001\t200001", "Uid"),
    ("Gid:\t200001\t200001\t200001\t200001", "Gid:\t200002\t200002\t200002\t200002", "Gid"),
    ("Groups:\t", "Groups:\t0", "supplementary groups"),
    ("NSpid:\t4242\t1", "NSpid:\t4242", "not pid 1"),
    ("NSpid:\t4242\t1", "NSpid:\t4242\t17\t1", "not pid 1"),
    ("Threads:\t1", "Threads:\t3", "threads"),
    ("CapEff:\t0000000000000000", "CapEff:\t0000000000200000", "CapEff"),
    ("CapBnd:\t0000000000000000", "CapBnd:\t000001ffffffffff", "CapBnd"),
    ("NoNewPrivs:\t1", "NoNewPrivs:\t0", "NO_NEW_PRIVS"),
    ("Seccomp_filters:\t2", "Seccomp_filters:\t1", "seccomp"),
    ("Seccomp:\t2", "Seccomp:\t0", "seccomp"),
])
def test_each_missing_lock_is_named(old, new, problem):
    problems = status_problems(GOOD_STATUS.replace(old, new), 200001)
    assert len(problems) == 1 and problem in problems[0], problems


def test_a_different_uid_is_refused():
    assert status_problems(GOOD_STATUS, 200002)[:2] == [
        "Uid ['200001', '200001', '200001', '200001'] is not 200002",
        "Gid ['200001', '200001', '200001', '200001'] is not 200002"]


MAPS = """55d0c0000000-55d0c0001000 r--p 00000000 fe:00 1234   /root/.pyenv/versions/3.11.7/bin/python3.11
7f46a9b05000-7f46a9b0c000 r--s 00000000 fe:00 338846   /usr/lib/x86_64-linux-gnu/gconv/gconv-modules.cache
7f46a9c00000-7f46a9d00000 rw-p 00000000 00:00 0
"""


def test_private_and_read_only_file_mappings_pass():
    assert maps_problems(MAPS) == []


@pytest.mark.parametrize("line", [
    "7f0000000000-7f0000001000 rw-s 00000000 00:01 77   /dev/zero (deleted)",
    "7f0000000000-7f0000001000 r--s 00000000 00:01 78   /memfd:relay (deleted)",
    "7f0000000000-7f0000001000 r--s 00000000 00:2a 9   /tmp/shared",
    "7f0000000000-7f0000001000 rw-s 00000000 fe:00 10   /opt/python/data.bin",
    "7f0000000000-7f0000001000 rw-s 00000000 00:01 32769   /SYSV00000000 (deleted)",
])
def test_shared_memory_a_writer_could_reach_is_refused(line):
    assert maps_problems(MAPS + line + "\n") == [f"shared mapping {' '.join(line.split()[:2])} {line.split(maxsplit=5)[5]}"]


def test_cgroups_are_read_per_controller():
    text = "9:name=systemd:/\n4:memory:/mist/t/s1\n2:cpuacct:/\n1:cpu:/mist/t/s1\n8:pids:/mist/t/s1\n0::/\n"
    expected = expected_groups(["/sys/fs/cgroup/memory/mist/t/s1/tasks", "/sys/fs/cgroup/cpu/mist/t/s1/tasks",
                                "/sys/fs/cgroup/pids/mist/t/s1/tasks"], "/sys/fs/cgroup")
    assert expected == {"memory": "/mist/t/s1", "cpu": "/mist/t/s1", "pids": "/mist/t/s1"}
    assert cgroup_problems(text, expected) == []
    assert cgroup_problems(text.replace("1:cpu:/mist/t/s1", "1:cpu:/mist/t/layer-0"), expected) == [
        "in cpu group '/mist/t/layer-0', not '/mist/t/s1'"]


def test_layer_zygotes_run_as_the_uids_after_the_sandboxes_in_cgroups_beside_theirs():
    config = WorkerConfig(data_dir=Path("/srv/mist"), uid_base=300_000, uid_count=100, layer_zygotes_max=3,
                          layer_zygotes_memory_mb=512, layer_zygote_idle_s=30)
    settings = layer_settings(config.validate())
    assert settings["uid_base"] == 300_100 and settings["memory_mb"] == 512 and settings["max_zygotes"] == 3
    assert settings["idle_s"] == 30 and settings["enabled"] is True
    assert settings["cgroup_parents"]["memory"] == f"/sys/fs/cgroup/memory/mist/{config.instance_tag}"


@pytest.mark.parametrize(("key", "bad"), [("layer_zygotes_memory_mb", 16), ("layer_zygotes_max", 0),
                                          ("layer_zygotes_max", 65), ("layer_zygote_idle_s", 0)])
def test_layer_zygote_settings_are_validated(key, bad):
    with pytest.raises(InvalidRequest) as info:
        WorkerConfig(data_dir=Path("/srv/mist"), **{key: bad}).validate()
    assert key in str(info.value) and repr(bad) in str(info.value)


def _child_holding(make_fds) -> tuple[int, int]:
    """A child process with only /dev/null on 0-2 and what make_fds() opens; (pid, go fd)."""
    import os

    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        for fd in {int(n) for n in os.listdir("/proc/self/fd")} - {0, 1, 2, go_r, ready_w}:
            try:
                os.close(fd)
            except OSError:
                pass
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        held = make_fds()
        os.close(ready_w)  # the parent reads EOF: this pipe is gone from the child
        os.read(go_r, 1)
        del held
        os._exit(0)
    os.close(go_r)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b""
    os.close(ready_r)
    return pid, go_w


@pytest.mark.parametrize(("make_fds", "problems"), [
    pytest.param(lambda: [], [], id="only /dev/null"),
    pytest.param(lambda: [__import__("socket").socket(__import__("socket").AF_UNIX)], [], id="one socket"),
    pytest.param(lambda: __import__("socket").socketpair(), ["socket:["], id="two sockets"),
    pytest.param(lambda: __import__("os").pipe(), ["pipe:[", "pipe:["], id="a pipe"),
    pytest.param(lambda: [__import__("os").memfd_create("relay")], ["/memfd:relay"], id="a memfd"),
])
def test_a_child_may_hold_dev_null_and_one_socket_only(make_fds, problems):
    import os

    pid, go = _child_holding(make_fds)
    try:
        found = [p for p in fd_problems(pid) if not p.endswith(f"pipe:[{os.fstat(go).st_ino}]")]
    finally:
        os.write(go, b"x")
        os.close(go)
        os.waitpid(pid, 0)
    assert len(found) == len(problems) and all(want in got for want, got in zip(problems, found)), found


@pytest.mark.parametrize(("runs", "max_runs", "expected"), [
    pytest.param([(0, 4096), (8192, 4096)], 2, [(0, 4096), (8192, 4096)], id="few enough"),
    pytest.param([(8192, 4096), (0, 4096)], 5, [(0, 4096), (8192, 4096)], id="sorted"),
    pytest.param([(0, 4096), (8192, 4096), (100_000, 4096)], 2, [(0, 12288), (100_000, 4096)],
                 id="the smallest gap goes first"),
    pytest.param([(0, 10), (20, 10), (40, 10), (60, 10)], 1, [(0, 70)], id="down to one run"),
])
def test_page_runs_are_coalesced_over_the_smallest_gaps(runs, max_runs, expected):
    from mist.worker.syscalls import coalesce

    assert coalesce(runs, max_runs) == expected
