"""Building one sandbox, in the zygote's children (stdlib + ctypes only); `attach_code` runs in the Worker.

Stages, each run by a different process:

1. `enter` (the intermediate, forked from the zygote, still root): move to the sandbox's
   cgroups by writing `0` to the v1 `tasks` files, set rlimits, unshare the mount, pid, ipc,
   uts (and network) namespaces. It then forks the sandbox's pid 1 and exits.
2. `build_generic` then `lock_down` (pid 1, before any user code): a tmpfs root with
   read-only binds of /usr and the interpreter tree, an empty tmpfs over site-packages, a
   minimal /etc and /dev, a fresh /proc and a size-capped /tmp; pivot_root into it, detach
   the host tree, make / read-only, switch to the sandbox uid, enter a user namespace mapping
   that uid to itself, drop every capability, set NO_NEW_PRIVS and load the seccomp filter.
   After this nothing in the process is privileged; a prewarmed sandbox waits here for its
   function.
3. Before ASSIGN: the Worker (root, outside) attaches exactly the function's code dir at
   /var/task and its layer at /opt/python, read-only, inside the sandbox's mount namespace
   (`attach_code`: open_tree clones moved in with move_mount). On ASSIGN the sandbox sets up
   the function's environment (`enter_function`) and imports the handler.

Timing (this machine, p50): stages 1 and 2 take a few ms, off the critical path for a
prewarmed sandbox. A prewarmed sandbox also copies up front the pages of the zygote a cold
start un-shares (see `syscalls.exclusive_pages`, WorkerConfig.prefault).

The zygote tree (docs/sandbox.md) reuses stages 1 and 2 for a layer zygote (`enter` without a
pid namespace, `build_generic` with the layer, `lock_down_layer_zygote`: its own host uid, no
user namespace, the layer filter), and has its children build their own namespaces
unprivileged: `unshare_layer_child`, `prepare_layer_child` (standby), then, once the zygote
mapped their uid (`map_identity`), `lock_down_layer_child`.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from mist.worker import syscalls as sc

_DEVICES = ("null", "zero", "full", "random", "urandom")
# Where setuid/setgid programs live (scanned once by the zygote, `find_setid_files`): each one
# found is covered in every sandbox by an empty file, so none is even visible (and every mount
# is nosuid anyway). (directory, depth)
_SETID_PLACES = (("/usr/bin", 1), ("/usr/sbin", 1), ("/usr/local/bin", 1), ("/usr/local/sbin", 1),
                 ("/usr/games", 1), ("/usr/lib", 3), ("/usr/libexec", 3), ("/usr/local/lib", 3))
# Parts of /proc a sandbox may read but never write (made read-only binds of themselves), as
# container runtimes do: the sysctls, the magic SysRq trigger, IRQ and bus settings.
_PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
_ROOT_OPTS = "size=4m,nr_inodes=4096,mode=0755"
_NSSWITCH = b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\nnetworks: files\nprotocols: files\nservices: files\n"


@dataclass
class HostLayout:
    """What the zygote learns about the host once, and every sandbox reuses."""

    root_dir: str  # an empty host directory each sandbox mounts its tmpfs root on
    base_prefix: str = sys.base_prefix
    stdlib_paths: list[str] = field(default_factory=list)
    executable: str = ""
    site_packages: str = ""
    ld_so_cache: bytes = b""
    has_ssl: bool = False
    cap_last: int = 40
    seccomp: dict[bool, bytes] = field(default_factory=dict)
    seccomp_layer: bytes = b""  # the floor under a layer zygote and its children
    setid_files: list[str] = field(default_factory=list)  # under /usr: covered in every sandbox

    @classmethod
    def probe(cls, root_dir: str) -> "HostLayout":
        base = sys.base_prefix
        version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        stdlib = [p for p in sys.path if p.startswith(base) and "site-packages" not in p]
        return cls(
            root_dir=root_dir,
            base_prefix=base,
            stdlib_paths=stdlib,
            executable=os.path.join(base, "bin", version),
            site_packages=os.path.join(base, "lib", version, "site-packages"),
            ld_so_cache=_read("/etc/ld.so.cache"),
            has_ssl=os.path.isdir("/etc/ssl"),
            cap_last=sc.cap_last_cap(),
            setid_files=find_setid_files(),
        )


def find_setid_files(places: tuple[tuple[str, int], ...] = _SETID_PLACES) -> list[str]:
    """Regular files with the setuid or setgid bit in `places` (~20 ms here: 6,000 entries)."""
    found: list[str] = []

    def walk(path: str, depth: int) -> None:
        try:
            entries = os.scandir(path)
        except OSError:
            return
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if depth > 1:
                            walk(entry.path, depth - 1)
                    elif entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mode & 0o6000:
                        found.append(entry.path)
                except OSError:
                    continue

    for place, depth in places:
        walk(place, depth)
    return sorted(p for p in found if p.startswith("/usr/"))


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _write(path: str, data: bytes, mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def enter(req: dict, pid_ns: bool = True) -> None:
    """Stage 1, in the intermediate process: cgroups, rlimits, namespaces (a layer zygote,
    `pid_ns=False`, stays in the zygote's pid namespace: see `layerzygote`)."""
    for tasks in req["cgroups"]:
        fd = os.open(tasks, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    limits = req["rlimits"]
    for res, value in (
        (resource.RLIMIT_NOFILE, limits["nofile"]),
        (resource.RLIMIT_NPROC, limits["nproc"]),
        (resource.RLIMIT_FSIZE, limits["fsize"]),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(res, (value, value))
    flags = sc.CLONE_NEWNS | sc.CLONE_NEWIPC | sc.CLONE_NEWUTS | (sc.CLONE_NEWPID if pid_ns else 0)
    enter_network(req)
    sc.unshare(flags)


def enter_network(req: dict) -> None:
    """A sandbox never shares the host's network namespace: without network it gets an empty
    one of its own; with egress, the namespace prepared for it (`network.SandboxNetwork`:
    a veth to the host, filtered there), given by path, or the spawn fails."""
    if not req.get("network"):
        sc.unshare(sc.CLONE_NEWNET)
        return
    path = req.get("netns")
    if not path:
        raise OSError("a sandbox with network needs its prepared network namespace (netns)")
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        sc.setns(fd, sc.CLONE_NEWNET)
    finally:
        os.close(fd)


def build_generic(req: dict, host: HostLayout, *, layer_dir: str | None = None,
                  proc_options: str | None = None) -> None:
    """Stage 2, in pid 1 of the new namespaces: everything that does not depend on the function.
    A layer zygote's root (`layer_dir` given) also gets its layer at /opt/python, /etc/passwd
    and group as links into /etc/mist (where each child mounts its own), and a /proc that shows
    only the processes it may inspect (`proc_options="hidepid=invisible"`)."""
    os.umask(0o022)
    sc.sethostname("mist")
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    r = host.root_dir
    sc.mount("tmpfs", r, "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, _ROOT_OPTS)
    for d in ("usr", "etc", "dev", "proc", "tmp", "var/task", "opt/python"):
        os.makedirs(f"{r}/{d}", 0o755)
    _bind_usr(r, host.setid_files)
    for link in ("bin", "lib", "lib64", "sbin"):
        target = os.readlink(f"/{link}") if os.path.islink(f"/{link}") else f"usr/{link}"
        if os.path.exists(f"/{link}"):
            os.symlink(target, f"{r}/{link}")
    base = host.base_prefix
    if base != "/usr" and not base.startswith("/usr/"):  # else it came with /usr
        os.makedirs(r + base, 0o755)
        sc.bind_readonly(base, r + base)
    if os.path.isdir(host.site_packages):
        sc.mount("tmpfs", r + host.site_packages, "tmpfs",
                 sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "size=4k,mode=0755")
    if layer_dir is not None:
        sc.bind_readonly(layer_dir, f"{r}/opt/python")
    _build_etc(r, req, host, identity_link=layer_dir is not None)
    _build_dev(r)
    sc.mount("proc", f"{r}/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, proc_options)
    if layer_dir is None:  # a layer zygote's children mount a /proc of their own: the kernel
        protect_proc(f"{r}/proc")  # refuses that while parts of this one are covered

    sc.mount("tmpfs", f"{r}/tmp", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, f"size={req['tmp_mb']}m,mode=1777")
    sc.set_tree_attributes(r, sc.MOUNT_ATTR_NOSUID)  # every mount of the sandbox, /dev's binds too


def _bind_usr(r: str, setid_files: list[str]) -> None:
    """/usr, read-only, with every setuid/setgid program covered by an empty file (the empty
    file lives under /tmp of the root, which the sandbox's own /tmp then hides)."""
    sc.mount("/usr", f"{r}/usr", None, sc.MS_BIND)
    if setid_files:
        empty = f"{r}/tmp/.empty"
        _write(empty, b"", 0o444)
        for path in setid_files:
            with contextlib.suppress(OSError):  # gone since the zygote looked
                sc.mount(empty, r + path, None, sc.MS_BIND)
    sc.set_tree_attributes(f"{r}/usr", sc.MOUNT_ATTR_RDONLY | sc.MOUNT_ATTR_NOSUID | sc.MOUNT_ATTR_NODEV)


def protect_proc(proc: str) -> None:
    """Make the parts of a fresh /proc that configure the host read-only (`_PROC_READONLY`).
    In a layer zygote's child (its own user namespace) the kernel refuses some of these binds;
    what they cover is then root's of the host, mode 0644 or stricter: not writable by it."""
    for name in _PROC_READONLY:
        path = f"{proc}/{name}"
        with contextlib.suppress(OSError):
            sc.bind_readonly(path, path, sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)


def _build_etc(r: str, req: dict, host: HostLayout, identity_link: bool = False) -> None:
    if identity_link:  # /etc/passwd -> mist/passwd: a layer zygote's child mounts its own /etc/mist
        os.mkdir(f"{r}/etc/mist", 0o755)
        write_identity(f"{r}/etc/mist", req["uid"])
        for name in ("passwd", "group"):
            os.symlink(f"mist/{name}", f"{r}/etc/{name}")
    else:
        write_identity(f"{r}/etc", req["uid"])
    _write(f"{r}/etc/hosts", b"127.0.0.1\tlocalhost mist\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    _write(f"{r}/etc/hostname", b"mist\n")
    _write(f"{r}/etc/nsswitch.conf", _NSSWITCH)
    dns = req.get("dns") if req["network"] else None  # mist's resolver (sandboxdns.py), nothing else
    _write(f"{r}/etc/resolv.conf", f"nameserver {dns}\noptions timeout:2 attempts:2\n".encode() if dns else b"")
    if host.ld_so_cache:
        _write(f"{r}/etc/ld.so.cache", host.ld_so_cache)
    if host.has_ssl:
        os.mkdir(f"{r}/etc/ssl", 0o755)
        sc.bind_readonly("/etc/ssl", f"{r}/etc/ssl")


def write_identity(etc: str, uid: int) -> None:
    """passwd and group naming the sandbox user `uid` (sbx_user), in directory `etc`."""
    _write(f"{etc}/passwd", f"root:x:0:0:root:/root:/usr/sbin/nologin\n"
                            f"sbx_user:x:{uid}:{uid}:mist sandbox:/tmp:/usr/sbin/nologin\n".encode())
    _write(f"{etc}/group", f"root:x:0:\nsbx_user:x:{uid}:\n".encode())


def _build_dev(r: str) -> None:
    for name in _DEVICES:
        _write(f"{r}/dev/{name}", b"", 0o666)
        sc.mount(f"/dev/{name}", f"{r}/dev/{name}", None, sc.MS_BIND)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"), ("shm", "/tmp")):
        os.symlink(target, f"{r}/dev/{name}")


def _no_mark(step: str) -> None:
    pass


def lock_down(req: dict, host: HostLayout, mark: Callable[[str], None] = _no_mark) -> None:
    """Stage 2b, right after `build_generic` (still before any function is known): pivot_root
    into the sandbox root, detach the host tree, make / read-only, then give up every
    privilege. The function's code is attached later from outside, by the Worker
    (`attach_code`), so a sandbox needs no privilege at all once it is in the pool."""
    _pivot_into(host.root_dir, mark)
    drop_privileges(req["uid"], host.cap_last, host.seccomp[bool(req["network"])], mark)


def _pivot_into(r: str, mark: Callable[[str], None] = _no_mark) -> None:
    os.chdir(r)
    sc.pivot_root(".", ".")
    sc.umount2(".", sc.MNT_DETACH)
    os.chdir("/")
    mark("pivot_root")
    sc.mount(None, "/", None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV)
    mark("remount_ro")


def lock_down_layer_zygote(uid: int, host: HostLayout) -> None:
    """A layer zygote, before it imports anything: pivot_root into its root, then become host
    uid `uid` (unprivileged, its own) with no capability, NO_NEW_PRIVS and the layer filter.
    It stays in the host's user namespace on purpose: its children's user namespaces are then
    children of the host's, so the (root) zygote can map each one's uid (`map_identity`)."""
    _pivot_into(host.root_dir)
    sc.drop_bounding_set(host.cap_last)  # needs CAP_SETPCAP: before the uid changes
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # clears the permitted and effective sets; not dumpable now
    sc.drop_all_capabilities()
    sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    sc.load_seccomp(host.seccomp_layer)


def map_identity(pid: int, uid: int) -> None:
    """In the zygote (root): map exactly `uid` (uid and gid) in the fresh user namespace of
    process `pid`, a layer zygote's child. Fails (EPERM) if that namespace was mapped already
    or is not a child of the host's: the map is the child's identity, given from outside."""
    line = f"{uid} {uid} 1\n".encode()
    _write(f"/proc/{pid}/uid_map", line)
    _write(f"/proc/{pid}/gid_map", line)


_CHILD_NS = sc.CLONE_NEWUSER | sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWIPC | sc.CLONE_NEWUTS | sc.CLONE_NEWNET


def unshare_layer_child() -> None:
    """In a layer zygote's intermediate (unprivileged): new user, mount, pid, ipc, uts and
    network namespaces; the user namespace has no mapping until the zygote writes one."""
    sc.unshare(_CHILD_NS)


def prepare_layer_child(host: HostLayout) -> None:
    """In a layer zygote's child, pid 1 of its namespaces, while it waits to be used (no uid
    yet): its hostname, a /proc of its own pid namespace, its own (still tiny) /tmp, an empty
    capability bounding set."""
    sc.sethostname("mist")
    sc.mount("proc", "/proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    protect_proc("/proc")
    sc.mount("tmpfs", "/tmp", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV, "size=64k,mode=1777")
    sc.drop_bounding_set(host.cap_last)


def lock_down_layer_child(tmp_mb: int, groups: list[int], host: HostLayout,
                          mark: Callable[[str], None] = _no_mark) -> int:
    """In a layer zygote's child, once the zygote mapped its uid: become that uid, attach itself
    to its cgroups (`groups`: O_PATH handles of their directories, whose `tasks` files belong to
    that uid), size its /tmp, name itself in /etc/mist (then read-only), drop every capability
    and load the sandbox filter (NO_NEW_PRIVS is inherited). Returns the uid. The process stays
    non-dumpable: the uid change made it so, and the layer filter forbids undoing it."""
    with open("/proc/self/uid_map", "rb") as f:
        uid = int(f.read().split()[0])
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # keeps the capabilities of its own user namespace
    mark("identity")
    for group in groups:
        tasks = os.open("tasks", os.O_WRONLY | os.O_CLOEXEC, dir_fd=group)
        try:
            os.write(tasks, b"0")  # this thread (the only one) into that group: no global lock
        finally:
            os.close(tasks)
            os.close(group)
    mark("cgroups")
    sc.mount(None, "/tmp", None, sc.MS_REMOUNT | sc.MS_NOSUID | sc.MS_NODEV, f"size={tmp_mb}m")
    sc.mount("tmpfs", "/etc/mist", "tmpfs", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC, "size=64k,mode=0755")
    write_identity("/etc/mist", uid)
    sc.mount(None, "/etc/mist", None, sc.MS_REMOUNT | sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    mark("mounts")
    sc.drop_all_capabilities()
    sc.load_seccomp(host.seccomp[False])
    mark("lock_down")
    return uid


def attach_code(pidfd: int, code_dir: str, layer_dir: str | None, code_tree: int | None = None) -> None:
    """In the Worker (root, outside the sandbox), before ASSIGN: mount exactly the function's
    code dir (and its layer) read-only at /var/task (/opt/python) inside the mount namespace of
    the sandbox `pidfd` refers to (open_tree clones of just those directories, moved in with
    move_mount), then return to our own namespace. (A layer zygote's child has its layer
    already: layer_dir=None.) `code_tree`: the clone of code_dir made ahead
    (mist/worker/codetrees.py), moved (and closed) here instead of cloning now.

    Only the calling thread enters the sandbox's namespace, for the few calls of the move: it
    first stops sharing its root and working directory with the process's other threads
    (unshare(CLONE_FS), which setns(CLONE_NEWNS) requires), blocks signals so that no Python
    signal handler runs meanwhile, and restores its working directory after (setns resets it
    to the namespace's root). Done by the Worker rather than the zygote, the cold start wakes
    one process (the sandbox) instead of two, and the sandbox never waits for its code."""
    trees = [(code_tree if code_tree is not None else sc.clone_tree_readonly(code_dir), "/var/task")]
    cwd = -1
    try:
        if layer_dir:
            trees.append((sc.clone_tree_readonly(layer_dir), "/opt/python"))
        own = _own_mount_ns()
        try:
            cwd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:  # our working directory was removed: come back to /
            cwd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        mask = sc.block_signals()
        try:
            sc.unshare(sc.CLONE_FS)
            sc.setns(pidfd, sc.CLONE_NEWNS)
            try:
                for fd, target in trees:
                    sc.move_mount_to(fd, target)
            finally:
                _leave(own, cwd)
        finally:
            sc.restore_signals(mask)
    finally:
        for fd in (cwd, *(fd for fd, _ in trees)):
            if fd >= 0:
                os.close(fd)


_OWN_MNT_NS: dict[tuple[int, int], int] = {}  # (pid, thread id) -> fd of that thread's mount namespace


def _own_mount_ns() -> int:
    """An fd of the calling thread's own mount namespace, to come back to after a setns into a
    sandbox's: opened once per thread (opening /proc/thread-self/ns/mnt is ~40 us of a sparse
    cold start), kept open (close-on-exec; a forked child opens its own)."""
    key = (os.getpid(), threading.get_native_id())
    fd = _OWN_MNT_NS.get(key)
    if fd is None:
        fd = _OWN_MNT_NS[key] = os.open("/proc/thread-self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    return fd


def _leave(own_mnt_ns: int, cwd: int) -> None:
    """Back to our own mount namespace and working directory; a thread that cannot return
    must not go on running in a sandbox's filesystem: the process aborts."""
    try:
        sc.setns(own_mnt_ns, sc.CLONE_NEWNS)
        os.fchdir(cwd)
    except BaseException:
        os.abort()


def function_finish(host: HostLayout) -> Callable[[dict, Callable[[str], None]], None]:
    """`runtime.main`'s `finish` for a sandbox: the function's environment, then /var/task
    (the Worker attached the code before it sent ASSIGN)."""

    def finish(assign: dict, mark: Callable[[str], None]) -> None:
        enter_function(assign, host)
        os.chdir("/var/task")
        mark("environment")

    return finish


def drop_privileges(uid: int, cap_last: int, bpf: bytes, mark: Callable[[str], None] = _no_mark) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    sc.prctl(sc.PR_SET_DUMPABLE, 1)
    mark("setuid")
    sc.unshare(sc.CLONE_NEWUSER)
    _write("/proc/self/uid_map", f"{uid} {uid} 1\n".encode())
    _write("/proc/self/setgroups", b"deny")
    _write("/proc/self/gid_map", f"{uid} {uid} 1\n".encode())
    mark("userns")
    sc.drop_bounding_set(cap_last)  # after unshare: a new user namespace starts with a full one
    sc.drop_all_capabilities()
    mark("capabilities")
    sc.prctl(sc.PR_SET_NO_NEW_PRIVS, 1)
    sc.load_seccomp(bpf)
    mark("seccomp")


_DEFAULTS = {  # Lambda's unreserved defaults: the function's own env may replace them
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "TZ": ":UTC",
    "PYTHONPATH": "/var/task:/opt/python",
    "HOME": "/tmp",
}


def _reserved_static(host: HostLayout) -> dict[str, str]:
    """The reserved keys that are the same for every function (the function's env cannot
    replace them)."""
    return {
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_REGION": "local",
        "AWS_DEFAULT_REGION": "local",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{sys.version_info[0]}.{sys.version_info[1]}",
        "LAMBDA_TASK_ROOT": "/var/task",
        "LAMBDA_RUNTIME_DIR": host.base_prefix,
    }


def function_environment(assign: dict, host: HostLayout) -> dict[str, str]:
    """Lambda's environment: unreserved defaults, then the user's env, then reserved keys."""
    name, version, memory = assign["function_name"], str(assign["version"]), str(assign["memory_mb"])
    env = dict(_DEFAULTS)
    env.update(dict(assign.get("env") or ()))
    env.update({
        "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": version,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": memory,
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/mist/{name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": assign["log_stream"],
        "_HANDLER": assign["handler"],
    })
    env.update(_reserved_static(host))
    return env


_PRESET: dict[str, str] = {}  # what os.environ holds since `preset_environment` (inherited by forks)


def preset_environment(host: HostLayout) -> None:
    """In a zygote, last: leave os.environ holding exactly the part of the environment that is
    the same for every function (the defaults and the fixed reserved keys), for the sandboxes
    forked after to inherit; `enter_function` then sets only the keys that differ, instead of
    building the whole environment at the cold start (each key is a putenv and a copy of the
    process's environment array)."""
    global _PRESET
    os.environ.clear()
    _PRESET = {**_DEFAULTS, **_reserved_static(host)}
    os.environ.update(_PRESET)


def warm_up(host: HostLayout, rounds: int = 16) -> None:
    """In the zygote: run `enter_function`'s environment handling a few times (see
    `runtime.warm_up` for why). Leaves os.environ empty."""
    assign = {"function_name": "warm-up", "version": 0, "memory_mb": 128, "log_stream": "", "handler": "m.h",
              "env": [["KEY", "value"]]}
    for _ in range(rounds):
        os.environ.clear()
        os.environ.update(function_environment(assign, host))
    os.environ.clear()


def prepare_zygote(host: HostLayout) -> None:
    """Once, in the zygote after its imports: leave the interpreter state every sandbox
    inherits as the user code should find it (no mist modules in sys.modules, import caches
    for the stdlib paths only, only the environment every function shares), so that a sandbox
    does not have to undo it: undoing it un-shares (copies) every page of the objects it
    touches."""
    _hide_mist_modules(host)
    sys.path[:] = host.stdlib_paths
    import time

    os.environ["TZ"] = ":UTC"  # sandboxes inherit the loaded time zone (enter_function sets TZ too)
    time.tzset()
    preset_environment(host)


_HIDDEN: dict[str, object] = {}  # mist's modules, out of sys.modules since prepare_zygote


def _hide_mist_modules(host: HostLayout) -> None:
    for name in [n for n in sys.modules if n == "mist" or n.startswith("mist.") or n == "pyseccomp"]:
        _HIDDEN[name] = sys.modules.pop(name)
    keep = set(host.stdlib_paths)
    for path in [p for p in sys.path_importer_cache if p not in keep]:
        del sys.path_importer_cache[path]


def import_late(name: str, host: HostLayout) -> object:
    """Import mist module `name` in the zygote after `prepare_zygote` (for what is needed only
    once some function needs it, see zygote._LazyTree): mist's modules are back in sys.modules
    for the import, so it finds the ones loaded already and its package's path, then hidden
    again with the new ones."""
    import importlib

    sys.modules.update(_HIDDEN)  # type: ignore[arg-type]
    try:
        return importlib.import_module(name)
    finally:
        _hide_mist_modules(host)


def enter_function(assign: dict, host: HostLayout) -> None:
    """After `finish`: the process's environment, paths and imports as the user code sees them
    (the zygote dropped its own environment and left the shared part, see `prepare_zygote`)."""
    import time

    env = function_environment(assign, host)
    environ = os.environ
    if _PRESET and len(environ) == len(_PRESET):  # as `preset_environment` left it: every key of
        for key, value in env.items():  # the preset is in env, so only the differences are left
            if _PRESET.get(key) != value:
                environ[key] = value
    else:
        environ.clear()
        environ.update(env)
    if env.get("TZ") != ":UTC":  # the zygote's tzset already made it UTC
        time.tzset()
    sys.path[:] = ["/var/task", "/opt/python", *host.stdlib_paths]
    sys.executable = host.executable
    sys.argv = [""]
