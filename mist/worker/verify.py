"""Checking a layer zygote's child from outside, before it is given anything (stdlib only).

A layer zygote runs tenant-chosen code, so nothing its children did to themselves is taken on
trust: the zygote (root) reads /proc, twice.

The child attaches itself to the sandbox's cgroups before that, with its own credentials: it
gets O_PATH handles of the groups' directories and opens their `tasks` files, given to its
uid, itself, so that neither the handles nor those files let anyone move a process that is not
its own. When the child says it is ready, before it gets the sandbox's channel (`check_child`):

- it is the uid the zygote mapped (all four uids and gids), with no supplementary group;
- it is still a single-threaded pid 1, and its mount, network, ipc, uts and pid namespaces were
  all created inside its own user namespace (by this child's own line: shared with no other
  sandbox, and not the layer zygote's);
- it holds no capability in any set, has NO_NEW_PRIVS and a seccomp filter of its own on top
  of the layer zygote's;
- it attached itself to exactly the sandbox's cgroups and is alone there, and the layer
  zygote's group holds nothing but the layer zygote's threads (no process of this child's line
  is left outside the sandbox);
- its working directory is its root;
- then, with no such process left that could pass it one, its open files: /dev/null and one Unix
  socket of its own network namespace, the one connected to the zygote (nothing inherited from
  the layer zygote: no pipe, other socket, memfd, eventfd or file, so no message can still be
  on its way to it from elsewhere);
- then its memory: no shared memory a writer could reach (no writable shared mapping, none of
  shmem, tmpfs, memfd or SysV segments: only read-only files of real filesystems, such as
  glibc's gconv cache in /usr). A mapping is made from a file descriptor, so with the files
  checked first, none can be made after.

The parsers are pure (`status_problems`, `maps_problems`, `cgroup_problems`); the checks read
/proc and raise `Refused` naming every problem found.
"""

from __future__ import annotations

import os
import select
import stat
from collections.abc import Iterable, Sequence

from mist.worker import syscalls as sc

_CAPS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
_DEV_NULL = os.makedev(1, 3)
_OWN_NAMESPACES = ("mnt", "net", "ipc", "uts", "pid")


class Refused(Exception):
    """The child is not what the zygote requires; it is killed and the spawn falls back."""


def status_problems(text: str, uid: int) -> list[str]:
    """What is wrong in /proc/PID/status of a child that should be sandbox uid `uid`."""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    problems = []
    for key in ("Uid", "Gid"):
        if fields.get(key) != [str(uid)] * 4:
            problems.append(f"{key} {fields.get(key)} is not {uid}")
    if fields.get("Groups"):
        problems.append(f"supplementary groups {fields['Groups']}")
    nspid = fields.get("NSpid", [])
    if len(nspid) != 2 or nspid[-1] != "1":
        problems.append(f"not pid 1 of a pid namespace under the host's (NSpid {nspid})")
    if fields.get("Threads") != ["1"]:
        problems.append(f"{fields.get('Threads')} threads")
    for key in _CAPS:
        value = fields.get(key, ["?"])
        if value != ["0000000000000000"]:
            problems.append(f"{key} {value}")
    if fields.get("NoNewPrivs") != ["1"]:
        problems.append("NO_NEW_PRIVS is not set")
    filters = fields.get("Seccomp_filters", ["0"])
    if fields.get("Seccomp") != ["2"] or not filters[0].isdigit() or int(filters[0]) < 2:
        problems.append(f"seccomp {fields.get('Seccomp')} with {filters} filters (2 or more expected)")
    return problems


def maps_problems(text: str) -> list[str]:
    """Shared mappings of /proc/PID/maps that could carry data between processes: writable
    ones, and any backed by an anonymous device (shmem, tmpfs, memfd, SysV: major 0)."""
    problems = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 5 or parts[1][3:4] != "s":
            continue
        major = int(parts[3].split(":")[0], 16)
        if "w" in parts[1] or major == 0:
            problems.append(f"shared mapping {parts[0]} {parts[1]} {parts[5] if len(parts) > 5 else ''}".strip())
    return problems


def cgroup_problems(text: str, expected: dict[str, str]) -> list[str]:
    """/proc/PID/cgroup against {controller: path} (v1 lines `id:controller[,...]:path`)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            found[controller] = path
    return [f"in {c} group {found.get(c)!r}, not {want!r}" for c, want in expected.items() if found.get(c) != want]


def expected_groups(tasks_files: Iterable[str], cgroup_root: str) -> dict[str, str]:
    """{controller: path} from the sandbox's `tasks` files (`<root>/<controller>/<path>/tasks`)."""
    groups = {}
    for tasks in tasks_files:
        rel = os.path.relpath(os.path.dirname(tasks), cgroup_root)
        controller, _, path = rel.partition("/")
        groups[controller] = "/" + path
    return groups


def read(path: str) -> str:
    """A (/proc or cgroup) file's text."""
    with open(path) as f:
        return f.read()


def _alive(pidfd: int) -> bool:
    return not select.select([pidfd], [], [], 0)[0]


def fd_problems(pid: int) -> list[str]:
    """Open files of `pid` other than /dev/null and one Unix socket of its own network namespace."""
    own = set()
    for line in read(f"/proc/{pid}/net/unix").splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 7:
            own.add(int(parts[6]))
    problems = []
    sockets = 0
    for name in os.listdir(f"/proc/{pid}/fd"):
        path = f"/proc/{pid}/fd/{name}"
        try:
            st = os.stat(path)
            link = os.readlink(path)
        except FileNotFoundError:
            continue
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == _DEV_NULL:
            continue
        if stat.S_ISSOCK(st.st_mode) and st.st_ino in own and not sockets:
            sockets += 1
            continue
        problems.append(f"fd {name} -> {link}")
    return problems


def _strays(zygote_pid: int, zygote_tasks: str, allowed: set[str]) -> list[str]:
    strays = set(read(zygote_tasks).split()) - set(os.listdir(f"/proc/{zygote_pid}/task")) - allowed
    return [f"processes other than the layer zygote in its group: {sorted(strays)}"] if strays else []



def _namespaces(pid: int, userns: int, which: Sequence[str]) -> list[str]:
    problems = []
    if os.stat(f"/proc/{pid}/ns/user").st_ino != userns:
        problems.append("not in the user namespace the zygote mapped")
    for ns in which:
        if sc.ns_owner(f"/proc/{pid}/ns/{ns}") != userns:
            problems.append(f"its {ns} namespace was not created in its own user namespace")
    return problems


def check_child(pid: int, pidfd: int, uid: int, userns: int, tasks_files: Sequence[str], cgroup_root: str,
                zygote_pid: int, zygote_tasks: str) -> None:
    """Everything the module docstring lists, once the child says it is ready, before it is
    given the sandbox's channel. Raises Refused naming every problem."""
    problems = status_problems(read(f"/proc/{pid}/status"), uid)
    problems += _namespaces(pid, userns, _OWN_NAMESPACES)
    problems += cgroup_problems(read(f"/proc/{pid}/cgroup"), expected_groups(tasks_files, cgroup_root))
    for tasks in tasks_files:
        members = set(read(tasks).split())
        if members != {str(pid)}:
            problems.append(f"{tasks} holds {sorted(members)}, not just {pid}")
    problems += _strays(zygote_pid, zygote_tasks, set())
    cwd, root = os.stat(f"/proc/{pid}/cwd"), os.stat(f"/proc/{pid}/root")
    if (cwd.st_dev, cwd.st_ino) != (root.st_dev, root.st_ino):
        problems.append("its working directory is not its root")
    problems += fd_problems(pid)  # after the strays: none is left that could pass it one now
    problems += maps_problems(read(f"/proc/{pid}/maps"))  # after the files: no fd, no new mapping
    if not _alive(pidfd):
        problems.append("it exited")
    if problems:
        raise Refused("; ".join(problems))
