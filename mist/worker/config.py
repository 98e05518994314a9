"""WorkerConfig: every knob of the worker, with its default, in one place."""

from __future__ import annotations

import hashlib
import ipaddress
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mist.core import keepalive
from mist.errors import InvalidRequest


def default_memory_budget_mb() -> int:
    """75 % of the machine's memory, in MB (4096 if /proc/meminfo cannot be read)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return max(64, int(line.split()[1]) * 3 // 4 // 1024)
    except (OSError, ValueError, IndexError):
        pass
    return 4096


@dataclass
class WorkerConfig:
    """Fields may be set after construction (e.g. from CLI flags); call validate() after."""

    data_dir: Path  # the worker's state (sandbox root mount point, zygote pid file)
    memory_budget_mb: int | None = None  # sum of instance limits plus prewarmed reservations;
    # None: 75 % of the machine's memory (MemTotal), leaving the rest to the host and mist itself
    keepalive_policy: str = "mist"  # the KeepAlivePolicy deciding when an idle function is
    # unloaded and prewarmed again (mist.core.keepalive.policy_names(): mist, hybrid-histogram,
    # fixed:MINUTES); see docs/keepalive.md
    keepalive_s: float | None = None  # set: a fixed keep-alive of this many seconds instead
    prewarm: int = 2  # generic sandboxes kept built in advance, at least
    prewarm_max: int = 32  # at most: the pool grows to the busiest second of the last minute's
    # cold starts (policy.pool_target)
    autoscale_tick_s: float = 2.0  # how often each function's desired instance count is decided
    target_utilisation: float = 0.7  # instances are sized for 70 % of their concurrency
    stable_window_s: float = 60.0  # the autoscaler's windows (mist.core.autoscale, docs/scaling.md)
    panic_window_s: float = 6.0
    reclaim_idle_s: float = 6.0  # while a function serves, its instances used within this many
    # seconds are not reclaimed above the autoscaler's target (policy.reclaimable)
    refill_delay_s: float = 0.02  # after an invocation took a pool sandbox, the refill waits this
    # long: a fork at once competes for the CPU with the answer on its way to the client
    prewarm_memory_mb: int = 128  # budget reserved by (and initial limit of) a prewarmed sandbox
    prefault: str = "touched"  # what prewarmed sandboxes copy up front (breaking copy-on-write
    # with the zygote before the cold start needs it): "touched" = the pages a cold start
    # un-shares (learned once from the first pool cold start), "all" = every writable page
    # (~10 MB more private memory per instance), "none". True/False mean "all"/"none".
    zygote_tree: bool = True  # functions with a dependency layer fork from a zygote that has
    # imported the layer's top-level packages (built on demand, shared per layer)
    layer_zygotes_memory_mb: int = 1024  # layer zygotes together; beyond it the least recently
    # used are evicted (also each one's own memory limit)
    layer_zygotes_max: int = 8  # layer zygotes at once (they run as the 2 x this many uids that
    # follow the sandboxes' uid range)
    layer_zygote_idle_s: float = 600.0  # a layer zygote no sandbox was forked from for this long
    # is evicted (the sandboxes forked from it keep running)
    queue_limit: int = 100  # invocations waiting per function before NoCapacity(queue_full)
    tmp_size_mb: int = 512  # /tmp size cap (tmpfs pages count toward the memory limit too)
    pids_max: int = 64  # processes + threads per sandbox (pids cgroup and RLIMIT_NPROC)
    nofile: int = 1024  # RLIMIT_NOFILE per sandbox
    fsize_mb: int = 512  # RLIMIT_FSIZE per sandbox
    init_timeout_s: float = 10.0  # the init phase's own limit (Lambda's 10 s)
    spawn_timeout_s: float = 10.0  # a sandbox not built by then is a SandboxFailed
    max_log_lines: int = 10_000  # per invocation; more are dropped with a note
    cgroup_root: Path = Path("/sys/fs/cgroup")
    uid_base: int | None = None  # first sandbox uid; None derives it from data_dir
    uid_count: int = 4096
    sandbox_network: str | None = None  # the IPv4 network of sandboxes with egress (a /24 or
    # larger: one address each); None: a /20 of 100.64.0.0/10 derived from data_dir
    egress_deny: tuple[str, ...] = ()  # networks no function may reach whatever it allows
    # (besides the built-in ones: netrules.BUILTIN_DENY); e.g. the cluster's own LAN
    network_prewarm: int = 2  # network namespaces kept prepared once egress was used
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

    @property
    def build_uid(self) -> int:
        """The uid pip runs as when it installs dependency layers (mist/control/buildjail.py):
        right after the layer zygotes' uids."""
        return self.first_uid + self.uid_count + 2 * self.layer_zygotes_max

    @property
    def network_layout(self):
        """The sandbox network's names and addresses (`netrules.Layout`)."""
        from mist.worker.netrules import Layout

        if self.sandbox_network is not None:
            net = ipaddress.IPv4Network(self.sandbox_network, strict=False)
        else:
            index = int(self.instance_tag[6:9], 16) % 1024
            net = ipaddress.IPv4Network((int(ipaddress.IPv4Address("100.64.0.0")) + index * 4096, 20))
        return Layout(self.instance_tag[:6], net)

    def validate(self) -> "WorkerConfig":
        """Raise InvalidRequest naming the first bad key and its value; return self."""
        if self.memory_budget_mb is None:
            self.memory_budget_mb = default_memory_budget_mb()
        checks: list[tuple[str, object, bool, str]] = [
            ("memory_budget_mb", self.memory_budget_mb, self.memory_budget_mb >= 64, "must be >= 64"),
            ("keepalive_s", self.keepalive_s, self.keepalive_s is None or self.keepalive_s >= 0,
             "must be None or >= 0"),
            ("prewarm", self.prewarm, 0 <= self.prewarm <= 64, "must be between 0 and 64"),
            ("prewarm_max", self.prewarm_max, self.prewarm <= self.prewarm_max <= 1024,
             f"must be between prewarm ({self.prewarm}) and 1024"),
            ("autoscale_tick_s", self.autoscale_tick_s, self.autoscale_tick_s > 0, "must be > 0"),
            ("target_utilisation", self.target_utilisation, 0 < self.target_utilisation <= 1,
             "must be in (0, 1]"),
            ("panic_window_s", self.panic_window_s, self.panic_window_s >= 1, "must be >= 1"),
            ("reclaim_idle_s", self.reclaim_idle_s, self.reclaim_idle_s >= 0, "must be >= 0"),
            ("stable_window_s", self.stable_window_s, self.stable_window_s >= self.panic_window_s,
             f"must be >= panic_window_s ({self.panic_window_s})"),
            ("refill_delay_s", self.refill_delay_s, 0 <= self.refill_delay_s <= 10, "must be between 0 and 10"),
            ("prewarm_memory_mb", self.prewarm_memory_mb, self.prewarm_memory_mb >= 16, "must be >= 16"),
            ("queue_limit", self.queue_limit, self.queue_limit >= 0, "must be >= 0"),
            ("tmp_size_mb", self.tmp_size_mb, self.tmp_size_mb >= 1, "must be >= 1"),
            ("pids_max", self.pids_max, self.pids_max >= 4, "must be >= 4"),
            ("nofile", self.nofile, self.nofile >= 16, "must be >= 16"),
            ("fsize_mb", self.fsize_mb, self.fsize_mb >= 1, "must be >= 1"),
            ("init_timeout_s", self.init_timeout_s, self.init_timeout_s > 0, "must be > 0"),
            ("spawn_timeout_s", self.spawn_timeout_s, self.spawn_timeout_s > 0, "must be > 0"),
            ("max_log_lines", self.max_log_lines, self.max_log_lines >= 1, "must be >= 1"),
            ("uid_base", self.uid_base, self.uid_base is None or self.uid_base >= 1000, "must be >= 1000"),
            ("uid_count", self.uid_count, self.uid_count >= 1, "must be >= 1"),
            ("layer_zygotes_memory_mb", self.layer_zygotes_memory_mb, self.layer_zygotes_memory_mb >= 32,
             "must be >= 32"),
            ("layer_zygotes_max", self.layer_zygotes_max, 1 <= self.layer_zygotes_max <= 64,
             "must be between 1 and 64"),
            ("layer_zygote_idle_s", self.layer_zygote_idle_s, self.layer_zygote_idle_s > 0, "must be > 0"),
            ("python", self.python, Path(self.python).is_absolute(), "must be an absolute path"),
            ("data_dir", self.data_dir, Path(self.data_dir).is_absolute(), "must be an absolute path"),
        ]
        checks.append(("network_prewarm", self.network_prewarm, 0 <= self.network_prewarm <= 64,
                       "must be between 0 and 64"))
        for key, nets in (("sandbox_network", (self.sandbox_network,) if self.sandbox_network else ()),
                          ("egress_deny", tuple(self.egress_deny))):
            for net in nets:
                try:
                    parsed = ipaddress.IPv4Network(net, strict=False)
                except ValueError:
                    raise InvalidRequest(f"worker config: {key} must be IPv4 networks like 10.0.0.0/8, got {net!r}") from None
                if key == "sandbox_network" and parsed.prefixlen > 24:
                    raise InvalidRequest(f"worker config: sandbox_network must be a /24 or larger, got {net!r}")
        if self.prefault is True or self.prefault is False:
            self.prefault = "all" if self.prefault else "none"
        checks.append(("prefault", self.prefault, self.prefault in ("touched", "all", "none"),
                       "must be 'touched', 'all' or 'none'"))
        for key, value, ok, rule in checks:
            if not ok:
                raise InvalidRequest(f"worker config: {key} {rule}, got {value!r}")
        try:
            keepalive.from_name(self.keepalive_policy)
        except InvalidRequest as exc:
            raise InvalidRequest(f"worker config: keepalive_policy: {exc.message}") from None
        if self.build_uid > 2**31 - 2:
            raise InvalidRequest("worker config: uid_base + uid_count (+ 2 uids per layer zygote) must stay "
                                 f"below 2**31, got {self.first_uid}")
        return self
