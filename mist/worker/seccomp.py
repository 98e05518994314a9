"""The sandbox's seccomp filter, compiled once (in a child of the zygote) to raw BPF bytes.

Default action: allow. Denied with EPERM: everything that changes mounts, namespaces, the
kernel, keys, time, tracing and (without network) every socket family but AF_UNIX. `clone3`
answers ENOSYS so glibc falls back to `clone`, whose flags a filter can inspect; `clone` with
any CLONE_NEW* flag is denied. io_uring is denied because it can open sockets behind the
filter's back.

`compile_layer_filter` is the floor under a layer zygote and everything forked from it (loaded
before the layer's packages are imported, inherited, irrevocable): the same denials, except that
`unshare` (of the namespaces a sandbox needs) and `mount` stay allowed so that a child can build
its own namespaces, /proc and /tmp; and, because the zygote runs tenant-chosen code that must
get no hold on the sandboxes it forks: the `seccomp` syscall (a user-notification listener could
inject fds into a child), `pidfd_getfd`, `kcmp`, making a process dumpable again, and becoming a
child subreaper are denied too. See docs/sandbox.md, "The zygote tree".

`compile_filter` needs pyseccomp (libseccomp); the BPF it returns is loaded in each sandbox with
`syscalls.load_seccomp`, which needs nothing but ctypes. The zygote gets its filters from
`compile_in_child`: pyseccomp and what it imports (ctypes.util, which imports shutil, bz2,
lzma, subprocess...) would otherwise stay loaded in the zygote and be mapped by every sandbox
forked from it, ~0.6 MB for nothing.
"""

from __future__ import annotations

import errno
import marshal
import os
import socket
import traceback

from mist.worker import syscalls

DENIED = (
    "mount", "umount2", "pivot_root", "chroot", "ptrace", "process_vm_readv", "process_vm_writev",
    "unshare", "setns", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "bpf", "keyctl", "add_key", "request_key", "perf_event_open", "userfaultfd",
    "open_by_handle_at", "name_to_handle_at", "swapon", "swapoff", "reboot", "acct", "quotactl",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "fsopen", "fsmount", "fsconfig", "fspick",
    "open_tree", "move_mount", "mount_setattr", "lookup_dcookie", "vhangup", "syslog",
    "iopl", "ioperm",
)
_CLONE_NEW_FLAGS = (
    syscalls.CLONE_NEWTIME, syscalls.CLONE_NEWNS, syscalls.CLONE_NEWCGROUP, syscalls.CLONE_NEWUTS,
    syscalls.CLONE_NEWIPC, syscalls.CLONE_NEWUSER, syscalls.CLONE_NEWPID, syscalls.CLONE_NEWNET,
)


# What a layer zygote's children need beyond a sandbox (see the module docstring).
LAYER_ALLOWED = ("mount", "unshare")
LAYER_DENIED = ("seccomp", "pidfd_getfd", "kcmp")
_LAYER_UNSHARE_DENIED = (syscalls.CLONE_NEWCGROUP, syscalls.CLONE_NEWTIME)
_PR_SET_DUMPABLE = 4
_PR_SET_CHILD_SUBREAPER = 36


def compile_filter(network: bool) -> bytes:
    """Build the filter for a sandbox with (`network=True`) or without inet sockets."""
    return _export(_base_filter(DENIED, network))


def compile_layer_filter() -> bytes:
    """Build the filter a layer zygote loads before it imports anything (no network)."""
    import pyseccomp as sc

    eperm = sc.ERRNO(errno.EPERM)
    f = _base_filter(tuple(n for n in DENIED if n not in LAYER_ALLOWED) + LAYER_DENIED, False)
    for flag in _LAYER_UNSHARE_DENIED:
        f.add_rule(eperm, "unshare", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(eperm, "prctl", sc.Arg(0, sc.EQ, _PR_SET_DUMPABLE), sc.Arg(1, sc.NE, 0))
    f.add_rule(eperm, "prctl", sc.Arg(0, sc.EQ, _PR_SET_CHILD_SUBREAPER))
    return _export(f)


def compile_in_child() -> tuple[bytes, bytes, bytes]:
    """(filter without network, filter with network, layer filter), compiled in a short-lived
    child process so that the caller never imports pyseccomp (see the module docstring). A
    failure raises RuntimeError with the child's traceback."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's coverage is not collected
        status = 0
        try:
            os.close(r)
            out = marshal.dumps((compile_filter(network=False), compile_filter(network=True),
                                 compile_layer_filter()))  # fmt: skip
        except BaseException:  # noqa: BLE001 - reported to the parent
            out, status = traceback.format_exc().encode(), 1
        view = memoryview(out)
        while view:
            view = view[os.write(w, view):]
        os._exit(status)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()  # up to the child's exit
    _, status = os.waitpid(pid, 0)
    if status != 0:
        raise RuntimeError(f"compiling the seccomp filters failed:\n{data.decode(errors='replace')}")
    try:
        without, with_network, layer = marshal.loads(data)
    except (EOFError, ValueError, TypeError):
        raise RuntimeError("compiling the seccomp filters failed: the child's answer was cut short") from None
    return without, with_network, layer


def _base_filter(denied: tuple[str, ...], network: bool):
    import pyseccomp as sc

    f = sc.SyscallFilter(sc.ALLOW)
    eperm = sc.ERRNO(errno.EPERM)
    for name in denied:
        f.add_rule(eperm, name)
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    for flag in _CLONE_NEW_FLAGS:
        f.add_rule(eperm, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    if network:  # AF_UNIX, AF_INET and AF_INET6 only (no netlink, packet, vsock, alg...)
        f.add_rule(eperm, "socket", sc.Arg(0, sc.EQ, socket.AF_UNSPEC))
        for family in range(socket.AF_INET + 1, socket.AF_INET6):
            f.add_rule(eperm, "socket", sc.Arg(0, sc.EQ, family))
        f.add_rule(eperm, "socket", sc.Arg(0, sc.GT, socket.AF_INET6))
        f.add_rule(eperm, "socketpair", sc.Arg(0, sc.NE, socket.AF_UNIX))
    else:
        f.add_rule(eperm, "socket", sc.Arg(0, sc.NE, socket.AF_UNIX))
        f.add_rule(eperm, "socketpair", sc.Arg(0, sc.NE, socket.AF_UNIX))
    return f


def _export(f) -> bytes:
    fd = os.memfd_create("mist-seccomp")
    try:
        with os.fdopen(os.dup(fd), "wb") as out:
            f.export_bpf(out)
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
