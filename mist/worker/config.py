"""WorkerConfig: every knob of the worker, with its default, in one place."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mist.errors import InvalidRequest


@dataclass
class WorkerConfig:
    """Fields may be set after construction (e.g. from CLI flags); call validate() after."""

    data_dir: Path  # the worker's state (sandbox root mount point, zygote pid file)
    memory_budget_mb: int = 4096  # sum of instance limits plus prewarmed reservations
    keepalive_s: float = 600.0  # an idle instance is reclaimed after this long
    prewarm: int = 2  # generic sandboxes kept built in advance
    prewarm_memory_mb: int = 128  # budget reserved by (and initial limit of) a prewarmed sandbox
    prefault: str = "touched"  # what prewarmed sandboxes copy up front (breaking copy-on-write
    # with the zygote before the cold start needs it): "touched" = the pages a cold start
    # un-shares (learned once from the first pool cold start), "all" = every writable page
    # (~10 MB more private memory per instance), "none". True/False mean "all"/"none".
    zygote_tree: bool = True  # functions with a dependency layer fork from a zygote that has
    # imported the layer's top-level packages (built on demand, shared per layer)
    queue_limit: int = 100  # invocations waiting per function before NoCapacity(queue_full)
    tmp_size_mb: int = 512  # /tmp size cap (tmpfs pages count toward the memory limit too)
    pids_max: int = 64  # processes + threads per sandbox (pids cgroup and RLIMIT_NPROC)
    nofile: int = 1024  # RLIMIT_NOFILE per sandbox
    fsize_mb: int = 512  # RLIMIT_FSIZE per sandbox
    init_timeout_s: float = 10.0  # the init phase's own limit (Lambda's 10 s)
    spawn_timeout_s: float = 10.0  # a sandbox not built by then is a SandboxFailed
    reap_interval_s: float = 5.0  # how often idle instances are checked against keepalive_s
    max_log_lines: int = 10_000  # per invocation; more are dropped with a note
    cgroup_root: Path = Path("/sys/fs/cgroup")
    uid_base: int | None = None  # first sandbox uid; None derives it from data_dir
    uid_count: int = 4096
    python: str = field(default_factory=lambda: sys.executable)

    @property
    def instance_tag(self) -> str:
        """A short stable name for this data dir (cgroup parent, uid range)."""
        return hashlib.sha256(str(Path(self.data_dir).resolve()).encode()).hexdigest()[:12]

    @property
    def first_uid(self) -> int:
        if self.uid_base is not None:
            return self.uid_base
        return 200_000 + (int(self.instance_tag[:6], 16) % 1024) * 65_536

    def validate(self) -> "WorkerConfig":
        """Raise InvalidRequest naming the first bad key and its value; return self."""
        checks: list[tuple[str, object, bool, str]] = [
            ("memory_budget_mb", self.memory_budget_mb, self.memory_budget_mb >= 64, "must be >= 64"),
            ("keepalive_s", self.keepalive_s, self.keepalive_s >= 0, "must be >= 0"),
            ("prewarm", self.prewarm, 0 <= self.prewarm <= 64, "must be between 0 and 64"),
            ("prewarm_memory_mb", self.prewarm_memory_mb, self.prewarm_memory_mb >= 16, "must be >= 16"),
            ("queue_limit", self.queue_limit, self.queue_limit >= 0, "must be >= 0"),
            ("tmp_size_mb", self.tmp_size_mb, self.tmp_size_mb >= 1, "must be >= 1"),
            ("pids_max", self.pids_max, self.pids_max >= 4, "must be >= 4"),
            ("nofile", self.nofile, self.nofile >= 16, "must be >= 16"),
            ("fsize_mb", self.fsize_mb, self.fsize_mb >= 1, "must be >= 1"),
            ("init_timeout_s", self.init_timeout_s, self.init_timeout_s > 0, "must be > 0"),
            ("spawn_timeout_s", self.spawn_timeout_s, self.spawn_timeout_s > 0, "must be > 0"),
            ("reap_interval_s", self.reap_interval_s, self.reap_interval_s > 0, "must be > 0"),
            ("max_log_lines", self.max_log_lines, self.max_log_lines >= 1, "must be >= 1"),
            ("uid_base", self.uid_base, self.uid_base is None or self.uid_base >= 1000, "must be >= 1000"),
            ("uid_count", self.uid_count, self.uid_count >= 1, "must be >= 1"),
            ("python", self.python, Path(self.python).is_absolute(), "must be an absolute path"),
            ("data_dir", self.data_dir, Path(self.data_dir).is_absolute(), "must be an absolute path"),
        ]
        if self.prefault is True or self.prefault is False:
            self.prefault = "all" if self.prefault else "none"
        checks.append(("prefault", self.prefault, self.prefault in ("touched", "all", "none"),
                       "must be 'touched', 'all' or 'none'"))
        for key, value, ok, rule in checks:
            if not ok:
                raise InvalidRequest(f"worker config: {key} {rule}, got {value!r}")
        if self.first_uid + self.uid_count > 2**31 - 2:
            raise InvalidRequest(f"worker config: uid_base + uid_count must stay below 2**31, got {self.first_uid}")
        return self
