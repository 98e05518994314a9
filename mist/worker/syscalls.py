"""Thin ctypes wrappers over the Linux calls Python 3.11 lacks (unshare, mount, pivot_root, capset,
prctl, seccomp). Stdlib only: this module runs inside the zygote and the sandboxes.

Every wrapper raises OSError with the errno and the call's arguments, so a failing setup step
says which step failed.
"""

from __future__ import annotations

import ctypes
import fcntl
import os

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.unshare.argtypes = (ctypes.c_int,)
_libc.sethostname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_libc.syscall.restype = ctypes.c_long
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_libc.setns.argtypes = (ctypes.c_int, ctypes.c_int)

# x86_64 syscall numbers (the only architecture mist supports).
SYS_PIVOT_ROOT = 155
SYS_CAPSET = 126
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442

OPEN_TREE_CLONE = 1
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4

CLONE_FS = 0x00000200  # not a namespace: the root and working directory, shared by threads
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEW_ALL = (
    CLONE_NEWTIME | CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC
    | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
)

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_SECCOMP = 22
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_GET_DUMPABLE = 3
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SECCOMP_MODE_FILTER = 2
MADV_POPULATE_WRITE = 23

_CAP_VERSION_3 = 0x20080522
NS_GET_USERNS = 0xB701  # ioctl on a namespace fd: an fd of the user namespace owning it


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _b(path: str | None) -> bytes | None:
    return None if path is None else os.fsencode(path)


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    _check(
        _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)),
        f"mount({source!r}, {target!r}, {fstype!r}, {flags:#x}, {data!r})",
    )


def bind_readonly(source: str, target: str, extra: int = MS_NOSUID | MS_NODEV) -> None:
    """Bind `source` on `target`, then make that bind read-only (a bind ignores MS_RDONLY)."""
    mount(source, target, None, MS_BIND)
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | extra)


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(fd, nstype), f"setns({nstype:#x})")


_SIG_BLOCK, _SIG_SETMASK = 0, 2
_ALL_SIGNALS = ctypes.create_string_buffer(b"\xff" * 128, 128)  # a full sigset_t (glibc: 1024 bits)


def block_signals() -> ctypes.Array:
    """Block every signal for the calling thread; returns the previous mask for
    `restore_signals`. (signal.pthread_sigmask does the same at ~100x the cost: it converts
    Python sets both ways.) A blocked signal waits in the kernel, so no Python handler runs."""
    old = ctypes.create_string_buffer(128)
    _check(_libc.pthread_sigmask(_SIG_BLOCK, _ALL_SIGNALS, old), "pthread_sigmask")
    return old


def restore_signals(old: ctypes.Array) -> None:
    _check(_libc.pthread_sigmask(_SIG_SETMASK, old, None), "pthread_sigmask")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def clone_tree_readonly(path: str, *, writable: bool = False) -> int:
    """A detached, private, read-only (nosuid, nodev) bind mount of `path`, as an fd
    (open_tree + mount_setattr) to attach with `move_mount_to`; `writable`: not read-only."""
    fd = _check(_libc.syscall(SYS_OPEN_TREE, -100, _b(path), OPEN_TREE_CLONE | os.O_CLOEXEC),
                f"open_tree({path!r})")
    try:
        readonly = 0 if writable else MOUNT_ATTR_RDONLY
        attr = _MountAttr(readonly | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, MS_PRIVATE, 0)
        _check(_libc.syscall(SYS_MOUNT_SETATTR, fd, b"", AT_EMPTY_PATH, ctypes.byref(attr),
                             ctypes.sizeof(attr)), f"mount_setattr({path!r})")
    except BaseException:
        os.close(fd)
        raise
    return fd


AT_RECURSIVE = 0x8000


def set_tree_attributes(path: str, attributes: int) -> None:
    """Set mount attributes (MOUNT_ATTR_*) on the mount at `path` and every mount below it, in
    one call (mount_setattr with AT_RECURSIVE)."""
    attr = _MountAttr(attributes, 0, 0, 0)
    _check(_libc.syscall(SYS_MOUNT_SETATTR, -100, _b(path), AT_RECURSIVE, ctypes.byref(attr), ctypes.sizeof(attr)),
           f"mount_setattr({path!r}, {attributes:#x})")


def move_mount_to(tree_fd: int, target: str) -> None:
    """Attach a detached mount (from `clone_tree_readonly`) at `target` in our mount namespace."""
    _check(_libc.syscall(SYS_MOVE_MOUNT, tree_fd, b"", -100, _b(target), MOVE_MOUNT_F_EMPTY_PATH),
           f"move_mount({target!r})")


def ns_owner(path: str) -> int:
    """The inode of the user namespace owning the namespace at `path` (/proc/PID/ns/...)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        owner = fcntl.ioctl(fd, NS_GET_USERNS)
    finally:
        os.close(fd)
    try:
        return os.fstat(owner).st_ino
    finally:
        os.close(owner)


def umount2(target: str, flags: int) -> None:
    _check(_libc.umount2(_b(target), flags), f"umount2({target!r})")


def pivot_root(new_root: str, put_old: str) -> None:
    _check(_libc.syscall(SYS_PIVOT_ROOT, _b(new_root), _b(put_old)), f"pivot_root({new_root!r})")


def sethostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, len(raw)), "sethostname")


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_libc.prctl(option, arg2, arg3, arg4, arg5), f"prctl({option})")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def drop_bounding_set(cap_last: int) -> None:
    """Empty the capability bounding set (needs CAP_SETPCAP; effective caps are kept)."""
    call = _libc.prctl
    for cap in range(cap_last + 1):
        if call(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0:
            _check(-1, f"prctl(PR_CAPBSET_DROP, {cap})")


def drop_all_capabilities() -> None:
    """Empty the ambient set, then the effective/permitted/inheritable sets."""
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(_CAP_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(_libc.syscall(SYS_CAPSET, ctypes.byref(header), ctypes.byref(data)), "capset")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_seccomp(bpf: bytes) -> None:
    """Install a compiled BPF program (8-byte sock_filter records). Needs NO_NEW_PRIVS first."""
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _check(
        _libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0),
        "prctl(PR_SET_SECCOMP)",
    )


def cap_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return 40


PAGE = os.sysconf("SC_PAGE_SIZE")
_PM_PRESENT = 1 << 63
_PM_EXCLUSIVE = 1 << 56


def writable_private_mappings(pid: int | str = "self") -> list[tuple[int, int]]:
    """(start, end) of every private writable mapping but [vsyscall]/[vvar]/[vdso]."""
    spans = []
    with open(f"/proc/{pid}/maps") as f:
        lines = f.read().splitlines()
    for line in lines:
        parts = line.split()
        if parts[1] != "rw-p" or (len(parts) > 5 and parts[5].startswith("[v")):
            continue
        start, end = (int(x, 16) for x in parts[0].split("-"))
        spans.append((start, end))
    return spans


def exclusive_pages(pid: int, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The runs of pages of `spans` that process `pid` maps exclusively (its own copy: written
    since it was forked, or new), from /proc/PID/pagemap, as (start, length) byte ranges.
    Needs to be allowed to read the process's pagemap (root here)."""
    import array

    runs: list[tuple[int, int]] = []
    fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for start, end in spans:
            first = start // PAGE
            count = (end - start) // PAGE
            raw = os.pread(fd, count * 8, first * 8)
            entries = array.array("Q")
            entries.frombytes(raw[: len(raw) - len(raw) % 8])
            run_start = None
            for i, entry in enumerate(entries):
                if entry & _PM_PRESENT and entry & _PM_EXCLUSIVE:
                    if run_start is None:
                        run_start = i
                elif run_start is not None:
                    runs.append(((first + run_start) * PAGE, (i - run_start) * PAGE))
                    run_start = None
            if run_start is not None:
                runs.append(((first + run_start) * PAGE, (len(entries) - run_start) * PAGE))
    finally:
        os.close(fd)
    return runs


def coalesce(runs: list[tuple[int, int]], max_runs: int) -> list[tuple[int, int]]:
    """At most `max_runs` (start, length) runs covering `runs` (sorted, disjoint): the runs
    separated by the smallest gaps are merged first (the gaps then count as covered)."""
    runs = sorted(runs)
    if len(runs) <= max_runs:
        return runs
    gaps = sorted(range(1, len(runs)), key=lambda i: runs[i][0] - (runs[i - 1][0] + runs[i - 1][1]))
    joins = set(gaps[:len(runs) - max_runs])
    out = [runs[0]]
    for i in range(1, len(runs)):
        start, length = runs[i]
        if i in joins:
            first = out[-1][0]
            out[-1] = (first, start + length - first)
        else:
            out.append((start, length))
    return out


def populate_ranges(ranges: list[tuple[int, int]]) -> int:
    """MADV_POPULATE_WRITE on each (start, length): break copy-on-write for those pages now.
    Ranges no longer mapped are skipped. Returns the bytes populated."""
    total = 0
    madvise = _libc.madvise
    for start, length in ranges:
        if madvise(start, length, MADV_POPULATE_WRITE) == 0:
            total += length
    return total


def populate_writable_memory() -> int:
    """Break copy-on-write sharing with the zygote now (MADV_POPULATE_WRITE on every private
    writable mapping), so the first run of the function does not pay a page fault per touched
    page. Returns the bytes populated."""
    total = 0
    for start, end in writable_private_mappings():
        if _libc.madvise(start, end - start, MADV_POPULATE_WRITE) == 0:
            total += end - start
    return total
