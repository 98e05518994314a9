"""cgroup v1 limits per sandbox: memory, cpu, pids (the only hierarchies this host has).

Layout: `<root>/<controller>/mist/<tag>/<sandbox id>`, tag = a hash of the worker's data dir,
so workers of different data dirs never touch each other's groups and a restarted worker finds
the leftovers of its crashed predecessor. The Worker (root) creates a group and writes its
limits before the fork; the sandbox attaches itself by writing `0` to each `tasks` file.

Value math is in pure functions (`cpu_shares`, `cfs_quota_us`, `memory_writes`, `pids_limit`).
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

log = logging.getLogger(__name__)

CONTROLLERS = ("memory", "cpu", "pids")
CPU_MB = 1769  # Lambda: one full vCPU at 1769 MB
CFS_PERIOD_US = 100_000


def cpu_shares(memory_mb: int) -> int:
    """cpu.shares proportional to memory: 1024 at 1769 MB, at least 2."""
    return max(2, 1024 * memory_mb // CPU_MB)


def cfs_quota_us(memory_mb: int, period_us: int = CFS_PERIOD_US) -> int:
    """At most max(1, memory_mb / 1769) CPUs."""
    return int(max(1.0, memory_mb / CPU_MB) * period_us)


def pids_limit(pids_max: int, concurrency: int) -> int:
    """Processes and threads: the configured cap, plus one handler thread per concurrent
    invocation when an instance serves more than one at a time."""
    return pids_max + (concurrency if concurrency > 1 else 0)


def memory_writes(old_mb: int | None, new_mb: int, memsw: bool) -> list[tuple[str, str]]:
    """The (file, value) writes that move a memory limit, in an order the kernel accepts
    (memsw must stay >= the memory limit: raise memsw first, lower it last)."""
    value = str(new_mb * 1024 * 1024)
    writes = [("memory.limit_in_bytes", value)]
    if memsw:
        if old_mb is not None and new_mb > old_mb:
            writes.insert(0, ("memory.memsw.limit_in_bytes", value))
        else:
            writes.append(("memory.memsw.limit_in_bytes", value))
    return writes


def _write(path: Path, value: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _read_pids(tasks: Path) -> set[int]:
    try:
        return {int(x) for x in tasks.read_text().split()}
    except (OSError, ValueError):
        return set()


class SandboxCgroups:
    """The three groups of one sandbox."""

    def __init__(self, dirs: dict[str, Path], memsw: bool) -> None:
        self.dirs = dirs
        self.memsw = memsw
        self.memory_mb: int | None = None

    @property
    def tasks_files(self) -> list[str]:
        return [str(d / "tasks") for d in self.dirs.values()]

    def create(self) -> None:
        for d in self.dirs.values():
            d.mkdir(exist_ok=True)

    def set_limits(self, memory_mb: int, pids_max: int) -> None:
        self.set_memory(memory_mb)
        self.set_pids(pids_max)
        try:
            _write(self.dirs["memory"] / "memory.swappiness", "0")
        except OSError:
            pass

    def set_memory(self, memory_mb: int) -> None:
        """Memory limit and the CPU share that goes with it."""
        if memory_mb != self.memory_mb:
            for name, value in memory_writes(self.memory_mb, memory_mb, self.memsw):
                _write(self.dirs["memory"] / name, value)
            self.memory_mb = memory_mb
            _write(self.dirs["cpu"] / "cpu.shares", str(cpu_shares(memory_mb)))
            _write(self.dirs["cpu"] / "cpu.cfs_quota_us", str(cfs_quota_us(memory_mb)))

    def set_cpu_shares(self, shares: int) -> None:
        """A CPU weight other than the memory-proportional one (tenants' weights, see Worker.rebalance_cpu)."""
        _write(self.dirs["cpu"] / "cpu.shares", str(shares))

    def set_pids(self, pids_max: int) -> None:
        _write(self.dirs["pids"] / "pids.max", str(pids_max))

    def oom_killed(self) -> bool:
        try:
            text = (self.dirs["memory"] / "memory.oom_control").read_text()
        except OSError:
            return False
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value) > 0
        return False

    def max_usage_mb(self) -> int:
        try:
            raw = (self.dirs["memory"] / "memory.max_usage_in_bytes").read_text()
        except OSError:
            return 0
        return -(-int(raw) // (1024 * 1024))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs.values():
            found |= _read_pids(d / "tasks")
        return found

    def remove(self) -> bool:
        """Kill what is left inside, then rmdir. False if a group is still busy (retry later)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        done = True
        for d in self.dirs.values():
            try:
                d.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                done = False
        return done


class CgroupTree:
    """The worker's parent groups, one per controller; and, where the host has the cpuset
    hierarchy, one cpuset group for the zygote and every sandbox (which inherit it when forked):
    the CPUs the sandboxes may use (`set_cpus`, mist/core/cpusplit.py)."""

    def __init__(self, root: Path, tag: str) -> None:
        self.parents = {c: Path(root) / c / "mist" / tag for c in CONTROLLERS}
        self.memsw = (Path(root) / "memory" / "memory.memsw.limit_in_bytes").exists()
        self.cpuset = Path(root) / "cpuset" / "mist" / tag
        self.has_cpuset = False  # after prepare: the group is there to join

    def prepare(self) -> None:
        for p in self.parents.values():
            p.mkdir(parents=True, exist_ok=True)
        self.has_cpuset = False
        top = self.cpuset.parent.parent
        if not (top / "cpuset.cpus").exists():
            return
        try:
            for group in (self.cpuset.parent, self.cpuset):  # a v1 cpuset needs cpus and mems to take tasks
                group.mkdir(exist_ok=True)
                for name in ("cpuset.mems", "cpuset.cpus"):
                    if group == self.cpuset or not (group / name).read_text().strip():
                        _write(group / name, (group.parent / name).read_text().strip())
        except OSError as exc:  # the sandboxes then simply share every CPU
            log.warning("no cpuset group for the sandboxes at %s: %s", self.cpuset, exc)
            return
        self.has_cpuset = True

    def join_cpuset(self, pid: int) -> None:
        """Put process `pid` (the zygote) in the sandboxes' cpuset group."""
        if self.has_cpuset:
            _write(self.cpuset / "cgroup.procs", str(pid))

    def set_cpus(self, cpus: str) -> None:
        """The CPUs the sandboxes may use, as a cpuset list ("0-2,5"); the kernel moves them."""
        if self.has_cpuset:
            _write(self.cpuset / "cpuset.cpus", cpus)

    def sandbox(self, sid: str) -> SandboxCgroups:
        return SandboxCgroups({c: p / sid for c, p in self.parents.items()}, self.memsw)

    def leftovers(self) -> list[SandboxCgroups]:
        """Sandbox groups found under the parents (a previous run's, at start)."""
        names: set[str] = set()
        for p in self.parents.values():
            if p.is_dir():
                names |= {child.name for child in p.iterdir() if child.is_dir()}
        return [self.sandbox(n) for n in sorted(names)]

    def remove_parents(self) -> bool:
        """rmdir .../mist/<tag> (the shared .../mist stays: another worker may be creating in it)."""
        done = True
        for p in (*self.parents.values(), self.cpuset):
            try:
                p.rmdir()
            except FileNotFoundError:
                pass
            except OSError:
                done = False
        return done
