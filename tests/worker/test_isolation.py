"""What a function cannot do: each probe runs as a real function in a real sandbox."""

import sys
from pathlib import Path

import pytest

from tests.worker.conftest import call, value

pytestmark = pytest.mark.sandbox

PROBES = '''
import ctypes, errno, os, pwd, resource, socket

libc = ctypes.CDLL(None, use_errno=True)


def attempt(fn):
    try:
        fn()
    except OSError as exc:
        return f"{type(exc).__name__}:{errno.errorcode.get(exc.errno, exc.errno)}"
    except ValueError as exc:
        return f"ValueError:{exc}"
    return "allowed"


def libc_call(name, *args):
    def run():
        if getattr(libc, name)(*args) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    return attempt(run)


def connect(family, addr):
    def run():
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(addr)
    return attempt(run)


def write(path):
    def run():
        with open(path, "w") as f:
            f.write("x")
    return attempt(run)


def raise_limit(res):
    soft, hard = resource.getrlimit(res)
    return attempt(lambda: resource.setrlimit(res, (hard + 1, hard + 1)))


PROBES = {
    "shadow": lambda: attempt(lambda: open("/etc/shadow").read()),
    "root_home": lambda: sorted(os.listdir("/root")) if os.path.isdir("/root") else None,
    "host_paths": lambda: [p for p in ("/work", "/home", "/var/run", "/run", "/sys", "/boot", "/root/.bashrc") if os.path.exists(p)],
    "postgres": lambda: connect(socket.AF_INET, ("127.0.0.1", 5432)),
    "redis": lambda: connect(socket.AF_INET, ("127.0.0.1", 6379)),
    "redis_v6": lambda: connect(socket.AF_INET6, ("::1", 6379)),
    "netlink": lambda: attempt(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0).close()),
    "unix_socket_of_postgres": lambda: connect(socket.AF_UNIX, "/var/run/postgresql/.s.PGSQL.5432"),
    "procs": lambda: sorted(p for p in os.listdir("/proc") if p.isdigit()),
    "write_root": lambda: write("/evil"),
    "write_task": lambda: write("/var/task/evil.py"),
    "write_usr": lambda: write("/usr/evil"),
    "write_tmp": lambda: write("/tmp/ok"),
    "raise_nofile": lambda: raise_limit(resource.RLIMIT_NOFILE),
    "raise_nproc": lambda: raise_limit(resource.RLIMIT_NPROC),
    "cgroup_write": lambda: write("/sys/fs/cgroup/memory/tasks"),
    "uid": lambda: [os.getuid(), os.geteuid(), os.getgid(), pwd.getpwuid(os.getuid()).pw_name],
    "mount": lambda: libc_call("mount", b"tmpfs", b"/tmp", b"tmpfs", 0, None),
    "unshare_user": lambda: libc_call("unshare", 0x10000000),
    "unshare_net": lambda: libc_call("unshare", 0x40000000),
    "capabilities": lambda: [line for line in open("/proc/self/status").read().splitlines()
                             if line.startswith(("CapEff", "CapPrm", "CapBnd", "NoNewPrivs", "Seccomp:"))],
    "kill_init": lambda: attempt(lambda: os.kill(1, 9)) if os.getpid() != 1 else "self",
    "hostname": lambda: socket.gethostname(),
    "task_files": lambda: sorted(os.listdir("/var/task")),
    "mount_points": lambda: sorted(line.split()[4] for line in open("/proc/self/mountinfo")),
    "unmount_task": lambda: libc_call("umount2", b"/var/task", 2),
    "scheduling": lambda: [os.sched_getscheduler(0) == os.SCHED_BATCH,
                           attempt(lambda: os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))),
                           attempt(lambda: os.setpriority(os.PRIO_PROCESS, 0, -5))],
}


def handler(event, context):
    return PROBES[event]()
'''


@pytest.fixture
async def probe(worker, function):
    spec = function(PROBES)

    async def run(name):
        return value(await call(worker, spec, name))

    return run


async def test_cannot_read_etc_shadow(probe):
    assert await probe("shadow") == "FileNotFoundError:ENOENT"


async def test_cannot_see_the_hosts_home_or_host_paths(probe):
    # only the interpreter's tree is mounted under /root, if it lives there (pyenv's does)
    base = Path(sys.base_prefix)
    root = Path("/root")
    assert await probe("root_home") == ([base.relative_to(root).parts[0]] if root in base.parents else None)
    assert await probe("host_paths") == []


@pytest.mark.parametrize("target", ["postgres", "redis", "redis_v6"])
async def test_cannot_connect_to_host_services(probe, target):
    assert await probe(target) == "PermissionError:EPERM"


async def test_cannot_open_netlink_or_reach_host_unix_sockets(probe):
    assert await probe("netlink") == "PermissionError:EPERM"
    assert await probe("unix_socket_of_postgres") == "FileNotFoundError:ENOENT"


async def test_proc_shows_only_the_sandboxs_own_processes(probe):
    assert await probe("procs") == ["1"]


async def test_cannot_write_outside_tmp(probe):
    assert await probe("write_root") == "OSError:EROFS"
    assert await probe("write_task") == "OSError:EROFS"
    assert await probe("write_usr") == "OSError:EROFS"
    assert await probe("write_tmp") == "allowed"


async def test_cannot_raise_rlimits_or_write_its_cgroup(probe):
    assert (await probe("raise_nofile")).startswith("ValueError:")
    assert (await probe("raise_nproc")).startswith("ValueError:")
    assert await probe("cgroup_write") == "FileNotFoundError:ENOENT"


async def test_runs_as_a_batch_task_and_cannot_raise_its_cpu_priority(probe):
    assert await probe("scheduling") == [True, "PermissionError:EPERM", "PermissionError:EACCES"]


async def test_runs_as_an_unprivileged_per_sandbox_uid(probe, worker):
    uid, euid, gid, name = await probe("uid")
    assert uid == euid == gid and uid >= worker.config.first_uid and name == "sbx_user"


async def test_cannot_mount_or_unshare(probe):
    assert await probe("mount") == "PermissionError:EPERM"
    assert await probe("unshare_user") == "PermissionError:EPERM"
    assert await probe("unshare_net") == "PermissionError:EPERM"


async def test_has_no_capabilities_and_is_under_seccomp(probe):
    status = dict(line.split(":\t") for line in await probe("capabilities"))
    assert status["CapEff"] == status["CapPrm"] == status["CapBnd"] == "0000000000000000"
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"


async def test_has_its_own_hostname(probe):
    assert await probe("hostname") == "mist"


async def test_two_sandboxes_get_different_uids(worker, function):
    source = "import os, time\ndef handler(e, c):\n    time.sleep(0.2)\n    return os.getuid()\n"
    spec = function(source)
    import asyncio

    a, b = await asyncio.gather(call(worker, spec), call(worker, spec))
    assert value(a) != value(b)


async def test_sees_only_its_own_code_and_cannot_unmount_it(probe, function):
    function("def handler(e, c):\n    return 'other'\n", name="other")  # another function's code
    assert await probe("task_files") == ["main.py"]
    mounts = await probe("mount_points")
    assert mounts.count("/var/task") == 1 and "/opt/python" not in mounts
    assert all(not m.startswith(("/work", "/home", "/var/lib", "/srv")) for m in mounts), mounts
    assert await probe("unmount_task") == "PermissionError:EPERM"
    assert await probe("task_files") == ["main.py"]
