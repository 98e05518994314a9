"""A layer zygote's children are isolated like any sandbox, and the layer zygote itself, which
runs tenant-chosen import code, holds no host privilege and no hold on its children.

The probes of test_isolation.py run again here, in a sandbox forked from a layer zygote."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.worker.conftest import call, value
from tests.worker.test_isolation import (  # noqa: F401 - the same checks, run with the `probe` below
    PROBES,
    test_cannot_connect_to_host_services,
    test_cannot_mount_or_unshare,
    test_cannot_open_netlink_or_reach_host_unix_sockets,
    test_cannot_raise_rlimits_or_write_its_cgroup,
    test_cannot_read_etc_shadow,
    test_cannot_see_the_hosts_home_or_host_paths,
    test_cannot_write_outside_tmp,
    test_has_its_own_hostname,
    test_has_no_capabilities_and_is_under_seccomp,
    test_proc_shows_only_the_sandboxs_own_processes,
    test_runs_as_an_unprivileged_per_sandbox_uid,
)
from tests.worker.test_zygote_tree import REPORT, make_layer, tree

pytestmark = pytest.mark.sandbox


@pytest.fixture
def layer(tmp_path: Path) -> Path:
    return make_layer(tmp_path / "layer", {"greeting/__init__.py": "VALUE = 'hi'\n"})


@pytest.fixture
async def probe(worker, function, layer):
    spec = function(PROBES, layer_dir=layer)

    async def run(name):
        return value(await call(worker, spec, name))

    await run("hostname")
    assert tree(worker).layer_spawns == 1 and tree(worker).layer_fallbacks == 0  # really a layer zygote's child
    return run


async def test_sees_only_its_own_code_and_its_layer_and_cannot_unmount_them(probe):
    assert await probe("task_files") == ["main.py"]
    mounts = await probe("mount_points")
    assert mounts.count("/var/task") == 1 and mounts.count("/opt/python") == 1
    assert all(not m.startswith(("/work", "/home", "/var/lib", "/srv")) for m in mounts), mounts
    assert await probe("unmount_task") == "PermissionError:EPERM"
    assert await probe("task_files") == ["main.py"]


NEIGHBOUR = """
import ctypes, errno, os, signal
from greeting import VALUE

libc = ctypes.CDLL(None, use_errno=True)


def attempt(fn):
    try:
        fn()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, exc.errno)
    return "allowed"


def ptrace_attach(pid):
    if libc.ptrace(16, pid, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "ptrace")


def handler(event, context):
    op = event["op"]
    if op == "whoami":
        cgroup = [line.split(":")[2] for line in open("/proc/self/cgroup") if ":memory:" in line][0]
        return {"uid": os.getuid(), "cgroup": cgroup, "procs": sorted(p for p in os.listdir("/proc") if p.isdigit())}
    if op == "write":
        with open("/tmp/secret", "w") as f:
            f.write(event["text"])
        return sorted(os.listdir("/tmp"))
    if op == "look":
        return {"tmp": sorted(os.listdir("/tmp")), "task": sorted(os.listdir("/var/task"))}
    if op == "signal":
        pid = event["pid"]
        return {"kill": attempt(lambda: os.kill(pid, 0)), "pidfd": attempt(lambda: os.close(os.pidfd_open(pid))),
                "kill_all": attempt(lambda: os.kill(-1, signal.SIGKILL)), "ptrace": attempt(lambda: ptrace_attach(pid))}
    if op == "hog":
        data = bytearray(300 << 20)
        data[::4096] = b"x" * (len(data) // 4096)
        return len(data)
    return VALUE
"""


@pytest.fixture
async def neighbours(worker, function, layer):
    """Two functions (think: two tenants) with the same layer, one instance each."""
    a = function(NEIGHBOUR, layer_dir=layer, name="a", memory_mb=128)
    b = function(NEIGHBOUR, layer_dir=layer, name="b", files={"other.py": ""}, memory_mb=128)
    ra, rb = await call(worker, a, {"op": "whoami"}), await call(worker, b, {"op": "whoami"})
    assert tree(worker).layer_spawns == 2 and len(tree(worker).layer_zygotes) == 1
    return a, b, value(ra), value(rb), ra.instance_id, rb.instance_id


async def test_neighbours_run_as_different_uids_in_their_own_groups_and_pid_namespaces(worker, neighbours):
    _, _, wa, wb, _, _ = neighbours
    (zygote,) = tree(worker).layer_zygotes
    layer_zygote_uid = int(Path(f"/proc/{zygote.pid}/status").read_text().split("Uid:")[1].split()[0])
    assert wa["uid"] != wb["uid"] and layer_zygote_uid not in (wa["uid"], wb["uid"])
    first = worker.config.first_uid
    assert all(first <= u < first + worker.config.uid_count for u in (wa["uid"], wb["uid"]))
    assert layer_zygote_uid >= first + worker.config.uid_count
    assert wa["cgroup"] != wb["cgroup"] and wa["procs"] == wb["procs"] == ["1"]


async def test_neighbours_cannot_see_each_others_files(worker, neighbours):
    a, b, *_ = neighbours
    assert value(await call(worker, a, {"op": "write", "text": "tenant a"})) == ["secret"]
    assert value(await call(worker, b, {"op": "look"})) == {"tmp": [], "task": ["main.py", "other.py"]}
    assert value(await call(worker, a, {"op": "look"})) == {"tmp": ["secret"], "task": ["main.py"]}


async def test_neighbours_cannot_signal_or_trace_each_other(worker, neighbours):
    a, b, _, _, ia, ib = neighbours
    for spec, other in ((a, worker._all[ib].pid), (b, worker._all[ia].pid)):
        assert value(await call(worker, spec, {"op": "signal", "pid": other})) == {
            "kill": "ESRCH", "pidfd": "ESRCH", "kill_all": "ESRCH", "ptrace": "EPERM"}  # nothing in reach
    ra, rb = await call(worker, a, {"op": "value"}), await call(worker, b, {"op": "value"})
    assert value(ra) == value(rb) == "hi" and (ra.instance_id, rb.instance_id) == (ia, ib)


async def test_each_neighbour_is_oom_killed_within_its_own_limit(worker, neighbours):
    a, b, _, _, ia, ib = neighbours
    zygote_pid = tree(worker).layer_zygotes[0].pid
    hog = await call(worker, a, {"op": "hog"})
    assert hog.error["errorType"] == "Runtime.OutOfMemory" and "128 MB" in hog.error["errorMessage"]
    calm = await call(worker, b, {"op": "value"})
    assert value(calm) == "hi" and calm.instance_id == ib and not calm.cold_start
    assert tree(worker).layer_zygotes[0].pid == zygote_pid
    again = await call(worker, a, {"op": "value"})
    assert value(again) == "hi" and again.cold_start and again.instance_id != ia


# Import-time code of a layer package runs in the layer zygote: it must find no privilege.
EVIL = """
import ctypes, errno, os, socket

RESULTS = {{}}
libc = ctypes.CDLL(None, use_errno=True)


def attempt(name, fn):
    try:
        fn()
    except OSError as exc:
        RESULTS[name] = errno.errorcode.get(exc.errno, exc.errno)
    else:
        RESULTS[name] = "allowed"


def libc_call(name, *args):
    def run():
        if getattr(libc, name)(*args) != 0:
            raise OSError(ctypes.get_errno(), name)
    return run


def write(path):
    with open(path, "w") as f:
        f.write("evil")


attempt("read_shadow", lambda: open("/etc/shadow").read())
attempt("write_host", lambda: write({host_file!r}))
attempt("write_root", lambda: write("/evil"))
attempt("setuid_root", lambda: os.setuid(0))
attempt("signal_host_init", lambda: os.kill(1, 0))
attempt("signal_the_worker", lambda: os.kill({worker_pid}, 0))
attempt("host_network", lambda: socket.create_connection(("127.0.0.1", 6379), timeout=1).close())
attempt("mount", libc_call("mount", b"tmpfs", b"/tmp", b"tmpfs", 0, None))
attempt("chroot", libc_call("chroot", b"/tmp"))
attempt("ptrace_the_worker", libc_call("ptrace", 16, {worker_pid}, 0, 0))
attempt("seccomp_listener", libc_call("syscall", 317, 1, 8, 0))  # SECCOMP_SET_MODE_FILTER + NEW_LISTENER
attempt("become_dumpable", libc_call("prctl", 4, 1, 0, 0, 0))
attempt("become_subreaper", libc_call("prctl", 36, 1, 0, 0, 0))
RESULTS["uid"] = os.getuid()
RESULTS["status"] = [line for line in open("/proc/self/status").read().splitlines()
                     if line.startswith(("CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp:"))]
RESULTS["visible_processes"] = len([p for p in os.listdir("/proc") if p.isdigit()])
"""


async def test_a_layer_zygote_has_no_host_privilege(worker, function, tmp_path):
    host_file = tmp_path / "written-by-the-layer"
    layer = make_layer(tmp_path / "evil-layer", {"evil.py": EVIL.format(host_file=str(host_file),
                                                                          worker_pid=os.getpid())})
    result = value(await call(worker, function("from evil import RESULTS\ndef handler(e, c):\n    return RESULTS\n",
                                               layer_dir=layer)))
    assert tree(worker).layer_zygotes[0].imported == ("evil",)
    status = dict(line.split(":\t") for line in result.pop("status"))
    assert status == {"CapEff": "0000000000000000", "CapPrm": "0000000000000000", "CapBnd": "0000000000000000",
                      "NoNewPrivs": "1", "Seccomp": "2"}
    assert result.pop("uid") >= worker.config.first_uid + worker.config.uid_count  # its own, no sandbox's
    assert result == {
        "read_shadow": "ENOENT", "write_host": "ENOENT", "write_root": "EROFS", "setuid_root": "EPERM",
        "signal_host_init": "EPERM", "signal_the_worker": "EPERM", "host_network": "EPERM", "mount": "EPERM",
        "chroot": "EPERM", "ptrace_the_worker": "EPERM", "seccomp_listener": "EPERM", "become_dumpable": "EPERM",
        "become_subreaper": "EPERM", "visible_processes": 1,
    }
    assert not host_file.exists()


# In the child (pid 1 of its namespaces), before it attaches itself to its cgroups: leave a process
# behind in those namespaces, outside the sandbox's cgroups.
STRAY = """
import os, time


def leave_a_process_behind():
    if os.getpid() == 1 and os.fork() == 0:
        time.sleep(60)
        os._exit(0)


os.register_at_fork(after_in_child=leave_a_process_behind)
"""


# A layer whose import-time code would keep a channel into every child: the child is refused
# (checked from outside, whatever the child's own code claims) and the function runs on the
# ordinary path, where the handler imports the layer itself.
@pytest.mark.parametrize("poison", [
    pytest.param("import mmap\nSHARED = mmap.mmap(-1, 4096, flags=mmap.MAP_SHARED)\n", id="shared-memory"),
    pytest.param("import os\nPIPE = os.pipe()\nos.closerange = lambda low, high: None\n", id="fds-kept-open"),
    pytest.param("import os\nos.setresuid = lambda *ids: None\n", id="uid-not-taken"),
    pytest.param(STRAY, id="stray-process"),
])
async def test_a_child_that_keeps_a_channel_to_its_layer_zygote_is_refused(worker, function, tmp_path, poison):
    layer = make_layer(tmp_path / "poisoned", {"poison.py": poison, "greeting.py": "VALUE = 'hi'\n"})
    results = await asyncio.gather(*(call(worker, function(REPORT.format(name="greeting"), layer_dir=layer,
                                                           name=f"f{i}")) for i in range(2)))
    assert [value(r) for r in results] == [{"pre": False, "value": "hi"}] * 2
    stats = tree(worker)
    assert stats.layer_spawns == 0 and stats.layer_refused >= 1 and stats.layer_fallbacks >= 2


# Left running in the layer zygote by a package: looks for its children's files through /proc.
SPY = """
import os, threading, time

SEEN = {"pids": set(), "files": {}}


def spy():
    while True:
        for pid in os.listdir("/proc"):
            if pid.isdigit() and int(pid) != os.getpid():
                SEEN["pids"].add(pid)
                for path in (f"/proc/{pid}/root/tmp", f"/proc/{pid}/cwd", f"/proc/{pid}/root/var/task"):
                    try:
                        SEEN["files"][path] = os.listdir(path)
                    except OSError:
                        pass
        time.sleep(0.01)


threading.Thread(target=spy, daemon=True).start()
"""


async def test_a_layer_zygote_cannot_look_into_its_children(worker, function, tmp_path):
    layer = make_layer(tmp_path / "spy-layer", {"spy.py": SPY})
    source = """
        import os
        from spy import SEEN
        def handler(event, context):
            if event == "write":
                with open("/tmp/secret", "w") as f:
                    f.write("tenant a")
            return {"pids": sorted(SEEN["pids"]), "files": SEEN["files"]}
    """
    a = function(source, layer_dir=layer, name="a")
    assert value(await call(worker, a, "write")) == {"pids": [], "files": {}}
    await asyncio.sleep(0.3)  # the spy has looked many times since
    b = function(source, layer_dir=layer, name="b")  # forked from the layer zygote now: its memory
    assert value(await call(worker, b, "read")) == {"pids": [], "files": {}}
    assert tree(worker).layer_spawns == 2


@pytest.mark.parametrize("message", [b"not json", b"[1, 2]", b'{"op": "ready", "imported": 7}',
                                     b'{"op": "standby", "pid": "me"}'])
async def test_a_layer_zygote_that_talks_nonsense_to_the_zygote_is_stopped_and_the_zygote_serves_on(
        worker, function, tmp_path, message):
    noisy = f"import os\nos.write(3, {message!r})  # fd 3: the layer zygote's control socket\n"
    layer = make_layer(tmp_path / "noisy", {"noisy.py": noisy, "greeting.py": "VALUE = 1\n"})
    zygote_pid = worker.statistics().zygote_pid
    assert value(await call(worker, function(REPORT.format(name="greeting"), layer_dir=layer))) == {
        "pre": False, "value": 1}
    assert value(await call(worker, function("def handler(e, c):\n    return 'calm'\n", name="calm"))) == "calm"
    assert worker.statistics().zygote_pid == zygote_pid and tree(worker).layer_spawns == 0
