"""The zygote tree, in the zygote (root): one layer zygote per dependency layer, started on
demand, shared by every function with that layer, evicted by `layerpolicy` (stdlib only).

A spawn request with a `layer_dir` is served from that layer's zygote (`layerzygote.py`): the
layer zygote keeps one standby child made ahead of need; the zygote maps the requested uid
into the child's user namespace, connects to it from inside its network namespace (it listens
there once it closed everything it inherited) and sends it handles of the sandbox's cgroup
directories, whose `tasks` files it gave to that uid; once the child says it is ready (in its
cgroups, that uid, locked down) it is checked from outside (`verify.check_child`), and only
then is it handed the sandbox's channel and output pipe (`layerchild.adopt`).
Whatever fails (the layer zygote crashed at import, is still importing after `wait_s`, a child
was refused, the request wants network) falls back to the ordinary fork path: the layer is
then mounted on ASSIGN and imported by the handler, as without the tree. After the first cold
start of a layer zygote's first child, the zygote reads which pages it un-shared (`learn`);
that layer zygote's standbys copy those up front.

Timing: see the "spawned" message's steps (Spawner.statistics().last_layer_spawn) and
docs/sandbox.md.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from mist.worker import layerchild, layerpolicy, layerzygote, verify
from mist.worker import syscalls as sc
from mist.worker.cgroups import SandboxCgroups
from mist.worker.protocol import recv_control, send_control

_MB = 1024 * 1024
_REFILL_DELAY_S = 0.05  # a standby is remade after the cold start it served had time to run
_TICK_S = 1.0
_MAX_FAILURES = 3  # refused or failed children before a layer is left to the ordinary path
_MAX_RUNS = 1500  # page runs sent to a layer zygote (its messages must stay under 64 KB)
_COOLDOWN_S = 600.0
_MAX_NAMES = 100  # imported/skipped names kept per layer zygote (its report must stay small)


@dataclass
class Settings:
    """What the Worker configures (Spawner sends it as {"op": "configure", "layers": {...}})."""

    enabled: bool = False
    memory_mb: int = 1024  # all layer zygotes together; also each one's memory cgroup limit
    max_zygotes: int = 8
    idle_s: float = 600.0
    uid_base: int = 0  # layer zygote slot i runs as host uid uid_base + i (used by no sandbox);
    # 2 * max_zygotes slots, so that a new one never waits for an evicted one to be gone
    cgroup_root: str = "/sys/fs/cgroup"
    cgroup_parents: dict[str, str] = field(default_factory=dict)  # controller -> the Worker's parent
    rlimits: dict[str, int] = field(default_factory=lambda: {"nofile": 1024, "nproc": 1088, "fsize": 512 * _MB})
    tmp_mb: int = 64  # the layer zygote's own /tmp (its children mount their own)
    pids_max: int = 256  # the layer zygote's threads, its standby child and that child's parent
    wait_s: float = 5.0  # a spawn waits this long for a starting layer zygote, then falls back
    import_timeout_s: float = 120.0
    handshake_s: float = 2.0

    @classmethod
    def from_message(cls, message: dict) -> "Settings":
        known = {k: v for k, v in message.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class _Pending:
    req: dict
    fds: list[int]
    deadline: float


@dataclass
class _LayerZygote:
    key: str  # the layer's host directory
    slot: int
    pid: int
    pidfd: int
    ctrl: socket.socket
    cgroups: SandboxCgroups
    started: float
    last_used: float
    state: str = "starting"  # -> "ready"; "stopping" once killed (then in LayerTree.dying)
    reaped: bool = False
    standby: int | None = None
    making: bool = True  # a standby is being made (the first one right after the imports)
    refill_due: float | None = None
    pending: deque[_Pending] = field(default_factory=deque)
    imported: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    sandboxes: int = 0
    failures: int = 0
    memory_mb: float = 0.0
    touched_kb: int = 0  # its standbys copy that much up front (see LayerTree.learn)


class LayerTree:
    def __init__(self, zygote) -> None:
        self.zygote = zygote  # the Zygote: ctrl, host, children, poller, spawn_plain
        self.settings = Settings()
        self.zygotes: dict[str, _LayerZygote] = {}
        self.by_fd: dict[int, _LayerZygote] = {}
        self.dying: list[_LayerZygote] = []  # killed, cgroups not yet removed (their uid slot held)
        self.cooldown: dict[str, float] = {}  # layer -> until when it is left to the ordinary path
        self.children: dict[str, str] = {}  # sandbox id -> the layer whose zygote forked it
        self.counters = {"spawns": 0, "fallbacks": 0, "evictions": 0, "refused": 0, "started": 0}
        self.own_net = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        self._next_tick = 0.0
        self._reported: object = None

    def configure(self, message: dict) -> None:
        self.settings = Settings.from_message(message)

    # -- requests from the Worker -----------------------------------------------------------
    def accepts(self, req: dict) -> bool:
        s = self.settings
        key = req.get("layer_dir")
        return bool(s.enabled and key and not req.get("network") and s.cgroup_parents
                    and self.cooldown.get(key, 0.0) <= time.monotonic())

    def spawn(self, req: dict, fds: list[int]) -> None:
        """Serve `req` from its layer's zygote (started if need be), or fall back."""
        now = time.monotonic()
        z = self.zygotes.get(req["layer_dir"]) or self._start(req["layer_dir"], now)
        if z is None:
            self._fallback(req, fds)
            return
        z.last_used = now
        z.pending.append(_Pending(req, fds, now + self.settings.wait_s))
        self._serve(z)

    def prepare(self, key: str) -> None:
        now = time.monotonic()
        if self.settings.enabled and key and key not in self.zygotes and self.cooldown.get(key, 0.0) <= now:
            self._start(key, now)

    def is_child(self, sid: str) -> bool:
        return sid in self.children

    def forget(self, sid: str) -> None:
        """Sandbox `sid` exited."""
        self.children.pop(sid, None)

    # -- starting a layer zygote ------------------------------------------------------------
    def _start(self, key: str, now: float) -> _LayerZygote | None:
        s = self.settings
        for victim in layerpolicy.evictions(self._views(now), now, memory_limit_mb=s.memory_mb,
                                            max_zygotes=s.max_zygotes, idle_s=s.idle_s, incoming=1):
            self._evict(self.zygotes[victim])
        used = {z.slot for z in self.zygotes.values()} | {z.slot for z in self.dying}
        slot = next((i for i in range(2 * s.max_zygotes) if i not in used), None)
        if slot is None or len(self.zygotes) >= s.max_zygotes:
            return None
        cgroups = SandboxCgroups({c: Path(p) / f"layer-{slot}" for c, p in s.cgroup_parents.items()},
                                 os.path.exists(f"{s.cgroup_root}/memory/memory.memsw.limit_in_bytes"))
        try:
            cgroups.create()
            cgroups.set_limits(s.memory_mb, s.pids_max)
        except OSError as exc:
            _log(f"layer zygote for {key}: could not make its cgroups: {exc}")
            cgroups.remove()
            return None
        req = {"uid": s.uid_base + slot, "cgroups": cgroups.tasks_files, "rlimits": s.rlimits,
               "tmp_mb": s.tmp_mb, "network": False}
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            pid = os.fork()
        except OSError as exc:
            _log(f"layer zygote for {key} could not be started: {exc}")
            cgroups.remove()
            return None
        if pid == 0:
            ours.close()
            layerzygote.main(theirs, key, req, self.zygote.host)  # never returns
        theirs.close()
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            pidfd = -1
        z = _LayerZygote(key, slot, pid, pidfd, ours, cgroups, now, now)
        ours.setblocking(False)
        self.zygotes[key] = z
        self.by_fd[ours.fileno()] = z
        self.zygote.poller.register(ours.fileno(), select.POLLIN)
        self.counters["started"] += 1
        self._report()
        return z

    # -- messages from layer zygotes --------------------------------------------------------
    def owns(self, fd: int) -> bool:
        return fd in self.by_fd

    def readable(self, fd: int) -> None:
        """Messages from a layer zygote: untrusted (it runs the layer's code). One it cannot
        have sent in good faith (malformed, or a flood) gets it evicted; nothing it sends can
        stop this loop."""
        z = self.by_fd[fd]
        for _ in range(16):  # a layer zygote flooding us must not starve the rest of the loop
            try:
                message, fds = recv_control(z.ctrl)
            except (BlockingIOError, InterruptedError):
                return
            except (OSError, ValueError):  # ValueError: not JSON
                message, fds = [], []
            for extra in fds:
                os.close(extra)
            if message is None:  # it exited (its exit is handled when it is reaped) or is broken
                self._forget_fd(z)
                return
            if not isinstance(message, dict):
                self._forget_fd(z)
                self._evict(z, counted=False)
                return
            if z.state == "stopping":
                continue
            try:
                self._on_message(z, message)
            except (TypeError, ValueError, AttributeError) as exc:
                _log(f"layer zygote for {z.key} sent {str(message)[:200]!r}: {exc}; stopped")
                self._evict(z, counted=False)
                return

    def _on_message(self, z: _LayerZygote, message: dict) -> None:
        op = message.get("op")
        if op == "ready" and z.state == "starting":
            z.state = "ready"
            z.imported = [str(n)[:100] for n in message.get("imported") or []][:_MAX_NAMES]
            z.skipped = {str(k)[:100]: str(v)[:300] for k, v in list((message.get("skipped") or {}).items())[:_MAX_NAMES]}
            for name, why in z.skipped.items():
                _log(f"layer zygote for {z.key}: did not import {name!r}: {why!r}")  # tenant text: quoted
            self._report()
        elif op == "standby":
            z.making = False
            z.standby = int(message.get("pid") or 0) or None
            self._serve(z)
        elif op == "standby_failed":
            z.making = False
            self._failed(z, str(message.get("error")))
        elif op == "failed":
            _log(f"layer zygote for {z.key} could not be built: {str(message.get('error'))[-2000:]!r}")


    def _serve(self, z: _LayerZygote) -> None:
        while z.pending and z.state == "ready" and z.standby is not None:
            p = z.pending.popleft()
            self._spawn_one(z, p.req, p.fds)
            if z.state != "ready":
                break
        if z.standby is None and z.state == "ready" and not z.making:
            if z.pending:
                self._refill(z)
            elif z.refill_due is None:
                z.refill_due = time.monotonic() + _REFILL_DELAY_S

    def _refill(self, z: _LayerZygote) -> None:
        """Ask for the next standby, unless one is there or on its way (the layer zygote must
        fork nothing while a handshake checks its group)."""
        z.refill_due = None
        if z.making or z.standby is not None or z.state != "ready":
            return
        z.making = True
        try:
            send_control(z.ctrl, {"op": "refill"})
        except OSError:
            pass

    # -- one sandbox from a layer zygote ----------------------------------------------------
    def _spawn_one(self, z: _LayerZygote, req: dict, fds: list[int]) -> None:
        sid = req["id"]
        pid, z.standby = z.standby, None
        assert pid is not None
        try:
            pidfd, steps = layerchild.adopt(
                pid, req, fds, zygote_pid=z.pid, zygote_tasks=_memory_tasks(z), cgroup_root=self.settings.cgroup_root,
                own_net=self.own_net, timeout=self.settings.handshake_s)
        except Exception as exc:  # noqa: BLE001 - refused, whatever the reason: the ordinary path serves
            self.counters["refused"] += 1
            _log(f"layer zygote for {z.key}: sandbox {sid} refused: {exc}")
            self._kill_strays(z)
            self._failed(z, str(exc))
            self._fallback(req, fds)
            return
        self.counters["spawns"] += 1
        z.sandboxes += 1
        z.failures = 0
        self.children[sid] = z.key
        self.zygote.children[pid] = sid
        self._report()  # before "spawned": the Worker's statistics count this spawn once it returns
        try:
            send_control(self.zygote.ctrl, {"op": "spawned", "id": sid, "pid": pid, "layer": True,
                                            "layer_dir": z.key, "steps": steps, "t1": time.perf_counter()}, [pidfd])
        finally:
            os.close(pidfd)

    @staticmethod
    def _kill_strays(z: _LayerZygote) -> None:
        """Kill what is in the layer zygote's groups besides its own threads."""
        try:
            own = {int(t) for t in os.listdir(f"/proc/{z.pid}/task")}
        except OSError:
            own = set()
        for pid in z.cgroups.pids() - own:
            _kill_pid(pid)

    # -- failures, fallbacks, exits ---------------------------------------------------------
    def _fallback(self, req: dict, fds: list[int]) -> None:
        self.counters["fallbacks"] += 1
        self.zygote.spawn_plain(req, fds)
        self._report()

    def _failed(self, z: _LayerZygote, why: str) -> None:
        z.failures += 1
        if z.failures >= _MAX_FAILURES:
            _log(f"layer zygote for {z.key}: {z.failures} failures in a row; its functions use the "
                 f"ordinary fork path for {_COOLDOWN_S:.0f} s")
            self.cooldown[z.key] = time.monotonic() + _COOLDOWN_S
            self._evict(z, counted=False)
        else:
            self._refill(z)

    def _evict(self, z: _LayerZygote, counted: bool = True) -> None:
        """Kill a layer zygote and its standby child (never a sandbox forked from it: those are
        in their own cgroups, pid namespaces and uids)."""
        if z.state == "stopping":
            return
        if counted:
            self.counters["evictions"] += 1
        z.state = "stopping"
        z.standby = None
        self.zygotes.pop(z.key, None)
        self.dying.append(z)
        layerchild.kill(z.pidfd)
        for pid in z.cgroups.pids():
            _kill_pid(pid)
        self._drain(z)
        self._report()

    def _drain(self, z: _LayerZygote) -> None:
        while z.pending:
            p = z.pending.popleft()
            self._fallback(p.req, p.fds)

    def _forget_fd(self, z: _LayerZygote) -> None:
        fd = z.ctrl.fileno()
        if fd >= 0 and self.by_fd.pop(fd, None) is not None:
            self.zygote.poller.unregister(fd)

    def exited(self, pid: int, status: int) -> bool:
        """A reaped process: True if it was a layer zygote or a standby child (ours to handle)."""
        for z in list(self.zygotes.values()):
            if pid == z.pid:
                if z.state == "starting":
                    _log(f"layer zygote for {z.key} exited while importing ({_describe(status)}); its "
                         f"functions use the ordinary fork path for {_COOLDOWN_S:.0f} s")
                    self.cooldown[z.key] = time.monotonic() + _COOLDOWN_S
                self._evict(z, counted=False)
                break
            if pid == z.standby:
                z.standby = None
                self._failed(z, "the standby child exited")
                return True
        for z in self.dying:
            if pid == z.pid:
                z.reaped = True
                self._forget_fd(z)
                z.ctrl.close()
                if z.pidfd >= 0:
                    os.close(z.pidfd)
                    z.pidfd = -1
                self._cleanup()
                return True
        return False

    def _cleanup(self) -> None:
        self.dying = [z for z in self.dying if not (z.reaped and z.cgroups.remove())]

    # -- the clock --------------------------------------------------------------------------
    def timeout_ms(self) -> int:
        """How long the zygote's poll may sleep before `tick` has something to do (-1: forever)."""
        dues = [self._next_tick] if self.zygotes or self.dying else []
        for z in self.zygotes.values():
            dues += [p.deadline for p in z.pending]
            if z.refill_due is not None:
                dues.append(z.refill_due)
        if not dues:
            return -1
        return max(0, int((min(dues) - time.monotonic()) * 1000) + 1)

    def tick(self) -> None:
        now = time.monotonic()
        for z in list(self.zygotes.values()):
            while z.pending and z.pending[0].deadline <= now:
                p = z.pending.popleft()
                self._fallback(p.req, p.fds)
            if z.refill_due is not None and z.refill_due <= now:
                self._refill(z)
            if z.state == "starting" and now - z.started > self.settings.import_timeout_s:
                _log(f"layer zygote for {z.key} still importing after {self.settings.import_timeout_s:g} s; stopped")
                self.cooldown[z.key] = now + _COOLDOWN_S
                self._evict(z, counted=False)
        if now < self._next_tick:
            return
        self._next_tick = now + _TICK_S
        s = self.settings
        for key in layerpolicy.evictions(self._views(now), now, memory_limit_mb=s.memory_mb,
                                         max_zygotes=s.max_zygotes, idle_s=s.idle_s):
            self._evict(self.zygotes[key])
        self._cleanup()
        self._report()

    def learn(self, sid: str) -> None:
        """Sandbox `sid`, a layer zygote's child, has had its cold start: if its layer zygote
        does not know yet, tell it which of its pages that un-shared (from the child's pagemap):
        its standbys copy those up front, off the critical path, instead of taking a page fault
        for each during the next cold starts."""
        z = self.zygotes.get(self.children.get(sid, ""))
        pid = next((p for p, s in self.zygote.children.items() if s == sid), None)
        if z is None or z.touched_kb or pid is None:
            return
        try:
            runs = sc.exclusive_pages(pid, sc.writable_private_mappings(pid))
        except OSError:
            return
        size = sum(length for _, length in runs)
        if size < 64 * sc.PAGE:
            return
        z.touched_kb = size // 1024
        try:
            send_control(z.ctrl, {"op": "touched", "ranges": sc.coalesce(runs, _MAX_RUNS)})
        except OSError:
            pass
        self._report()

    def _views(self, now: float) -> list[layerpolicy.ZygoteView]:
        views = []
        for z in self.zygotes.values():
            if z.state == "stopping":
                continue
            z.memory_mb = _usage_mb(z.cgroups)
            views.append(layerpolicy.ZygoteView(z.key, z.memory_mb, z.last_used,
                                                busy=z.state == "starting" or bool(z.pending)))
        return views

    # -- statistics and shutdown ------------------------------------------------------------
    def _report(self) -> None:
        now = time.monotonic()
        for z in self.zygotes.values():
            z.memory_mb = _usage_mb(z.cgroups)
        zygotes = [{"layer_dir": z.key, "state": z.state, "pid": z.pid, "memory_mb": round(z.memory_mb),
                    "sandboxes": z.sandboxes, "touched_kb": z.touched_kb, "imported": z.imported, "skipped": z.skipped,
                    "idle_s": round(now - z.last_used, 1)} for z in self.zygotes.values()]
        report = {"op": "layers", "zygotes": zygotes, **self.counters,
                  "cooling_down": sorted(k for k, until in self.cooldown.items() if until > now)}
        key = ({**report, "zygotes": [{**z, "idle_s": 0} for z in zygotes]})
        if key == self._reported:
            return
        self._reported = key
        try:
            send_control(self.zygote.ctrl, report)
        except OSError:
            pass

    def shutdown(self) -> None:
        for z in list(self.zygotes.values()):
            self._evict(z, counted=False)
        for z in list(self.dying):
            if not z.reaped:
                try:
                    os.waitpid(z.pid, 0)
                except ChildProcessError:
                    pass
                self.exited(z.pid, 0)
        for z in self.dying:
            z.reaped = True
        for _ in range(50):
            self._cleanup()
            if not self.dying:
                return
            time.sleep(0.01)


def _memory_tasks(z: _LayerZygote) -> str:
    return str(z.cgroups.dirs["memory"] / "tasks")


def _usage_mb(cgroups: SandboxCgroups) -> float:
    try:
        return int(verify.read(str(cgroups.dirs["memory"] / "memory.usage_in_bytes"))) / _MB
    except (OSError, ValueError, KeyError):
        return 0.0


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else f"status {status}"


def _log(text: str) -> None:
    try:
        os.write(2, f"mist zygote: {text}\n".encode("utf-8", "replace"))
    except OSError:
        pass
