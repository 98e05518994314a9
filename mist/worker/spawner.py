"""The Worker's handle on its zygote process (see zygote.py for the control protocol).

`start()` launches `python -I -S` on a bootstrap that imports only mist.worker's sandbox-side
modules (the package `__init__` files are not run, so the zygote stays small), waits for its
hello and sends it the zygote tree's settings (`layer_settings`). `spawn()` sends a request
with the sandbox's channel and output fds and returns the sandbox's pid and pidfd (a request
with a `layer_dir` is served from that layer's zygote when it can be). `exit_status(sid)`
resolves when the zygote reaps that sandbox. `prepare_layer()` starts a layer's zygote ahead of
its first cold start; `statistics()` shows the layer zygotes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from mist.errors import SandboxFailed
from mist.worker.cgroups import CgroupTree, pids_limit
from mist.worker.config import WorkerConfig
from mist.worker.protocol import recv_control, send_control

log = logging.getLogger("mist.worker")

REPO_ROOT = str(Path(__file__).resolve().parents[2])

BOOTSTRAP = """\
import sys, types
repo, site, fd, root = sys.argv[1:5]
sys.path.insert(0, repo)
sys.path.append(site)
for name, path in (("mist", repo + "/mist"), ("mist.worker", repo + "/mist/worker")):
    module = types.ModuleType(name)
    module.__path__ = [path]
    sys.modules[name] = module
from mist.worker import zygote
zygote.main(int(fd), root)
"""


_MAX_CONCURRENCY = 1000  # as worker.MAX_CONCURRENCY: RLIMIT_NPROC leaves room for that many threads


def layer_settings(config: WorkerConfig) -> dict:
    """The zygote tree's settings for the zygote (`zygotetree.Settings`) from a WorkerConfig:
    layer zygotes run as the uids right after the sandboxes' range, in cgroups beside theirs."""
    return {
        "enabled": bool(config.zygote_tree),
        "memory_mb": config.layer_zygotes_memory_mb,
        "max_zygotes": config.layer_zygotes_max,
        "idle_s": config.layer_zygote_idle_s,
        "uid_base": config.first_uid + config.uid_count,
        "cgroup_root": str(config.cgroup_root),
        "cgroup_parents": {c: str(p) for c, p in CgroupTree(config.cgroup_root, config.instance_tag).parents.items()},
        "rlimits": {"nofile": config.nofile, "nproc": pids_limit(config.pids_max, _MAX_CONCURRENCY),
                    "fsize": config.fsize_mb * 1024 * 1024},
    }


@dataclass(frozen=True)
class LayerZygoteStatistics:
    layer_dir: str
    state: str  # "starting" (importing) or "ready"
    pid: int
    memory_mb: float  # its memory cgroup's usage (imported packages, its standby child)
    sandboxes: int  # forked from it so far
    touched_kb: int  # copied up front by its standby children (learned from its first child)
    imported: tuple[str, ...]
    skipped: dict[str, str]  # top-level names whose import failed, and why
    idle_s: float


@dataclass(frozen=True)
class SpawnerStatistics:
    zygote_pid: int | None
    layer_zygotes: tuple[LayerZygoteStatistics, ...] = ()
    layer_zygotes_mb: float = 0.0
    layer_spawns: int = 0  # sandboxes forked from a layer zygote
    layer_fallbacks: int = 0  # layer spawns that took the ordinary fork path instead
    layer_evictions: int = 0
    layer_refused: int = 0  # layer zygote children that failed the zygote's checks
    layer_zygotes_started: int = 0
    layers_cooling_down: tuple[str, ...] = ()  # left to the ordinary path after repeated failures
    last_layer_spawn: dict[str, float] = field(default_factory=dict)  # ms per step: "request" (the
    # request's way to the zygote), the zygote's steps, "reply" (the answer's way back)


def _pyseccomp_dir() -> str:
    spec = importlib.util.find_spec("pyseccomp")
    if spec is None or spec.origin is None:
        raise SandboxFailed("pyseccomp is not installed; the zygote needs it to build the seccomp filter")
    return str(Path(spec.origin).parent)


class Spawner:
    def __init__(self, python: str, root_dir: Path, pid_file: Path, *, layers: dict | None = None) -> None:
        """`layers`: `layer_settings(config)`; None derives them from the defaults for the data dir
        that holds `root_dir`."""
        self._python = python
        self._root_dir = root_dir
        self._pid_file = pid_file
        self._layers = layers if layers is not None else layer_settings(WorkerConfig(data_dir=root_dir.parent))
        self._layer_report: dict = {}
        self.layer_zygotes_mb = 0.0  # the layer zygotes' memory as last reported (placement reads it)
        self._layer_waiters: dict[str, list[asyncio.Future]] = {}
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._hello: asyncio.Future | None = None
        self._spawns: dict[str, asyncio.Future] = {}
        self._exits: dict[str, asyncio.Future] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.learned_kb = 0  # the zygote learned which pages a cold start un-shares (see learn)
        self.last_layer_spawn: dict[str, float] = {}  # ms per step of the latest layer spawn
        self._layer_children: dict[str, str] = {}  # sandbox id -> its layer, until its first result

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def alive(self) -> bool:
        return self._sock is not None and self._proc is not None and self._proc.poll() is None

    async def start(self, timeout: float = 30.0) -> None:
        self._loop = loop = asyncio.get_running_loop()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        cmd = [self._python, "-I", "-S", "-c", BOOTSTRAP, REPO_ROOT, _pyseccomp_dir(),
               str(child.fileno()), str(self._root_dir)]
        try:
            self._proc = subprocess.Popen(cmd, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL,
                                          start_new_session=True)
        finally:
            child.close()
        self._pid_file.write_text(f"{self._proc.pid}\n")
        parent.setblocking(False)
        self._sock = parent
        self._hello = loop.create_future()
        loop.add_reader(parent.fileno(), self._readable)
        try:
            await asyncio.wait_for(self._hello, timeout)
            send_control(parent, {"op": "configure", "layers": self._layers})
        except (asyncio.TimeoutError, SandboxFailed, OSError) as exc:
            await self.stop()
            raise SandboxFailed(f"the zygote did not start: {exc or 'timed out'}") from None

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                message, fds = recv_control(self._sock)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("zygote control socket failed: %s", exc)
                message, fds = None, []
            if message is None:
                self._lost()
                return
            self._dispatch(message, fds)

    def _dispatch(self, message: dict, fds: list[int]) -> None:
        op, sid = message.get("op"), message.get("id")
        if op == "hello":
            if self._hello and not self._hello.done():
                self._hello.set_result(message["pid"])
        elif op == "spawned":
            if message.get("layer"):  # the zygote side of a layer spawn, and the way back
                self._layer_children[str(sid)] = str(message.get("layer_dir") or "")
                reply_ms = (time.perf_counter() - float(message.get("t1") or 0)) * 1000
                self.last_layer_spawn = {**(message.get("steps") or {}), "reply": round(reply_ms, 3)}
            fut = self._spawns.pop(sid, None)
            pidfd = fds[0] if fds else None
            if fut is not None and not fut.done():
                fut.set_result((message["pid"], pidfd))
            elif pidfd is not None:
                os.close(pidfd)
            return
        elif op == "spawn_failed":
            fut = self._spawns.pop(sid, None)
            if fut is not None and not fut.done():
                fut.set_exception(SandboxFailed(f"sandbox {sid} could not be built: {message.get('error')}"))
        elif op == "learned":
            self.learned_kb = int(message.get("kb") or 0)
        elif op == "layers":
            self._layer_report = message
            self.layer_zygotes_mb = sum(float(z.get("memory_mb") or 0.0) for z in message.get("zygotes") or ())
            self._wake_layer_waiters()
        elif op == "exit":
            exited = self._exits.get(sid)
            if exited is not None and not exited.done():
                exited.set_result(message["status"])
        for fd in fds:
            os.close(fd)


    def _lost(self) -> None:
        if self._sock is not None:
            assert self._loop is not None
            self._loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None
        error = SandboxFailed("the zygote exited")
        for fut in list(self._spawns.values()) + ([self._hello] if self._hello else []):
            if not fut.done():
                fut.set_exception(error)
        self._spawns.clear()
        for fut in self._exits.values():
            if not fut.done():
                fut.set_result(None)
        for waiters in self._layer_waiters.values():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
        self._layer_waiters.clear()

    async def spawn(self, request: dict, fds: list[int]) -> tuple[int, int | None]:
        """Send one spawn request; returns (pid, pidfd) once the sandbox's pid 1 exists."""
        if self._sock is None:
            raise SandboxFailed("the zygote is not running")
        assert self._loop is not None
        sid = request["id"]
        fut = self._spawns[sid] = self._loop.create_future()
        self._exits[sid] = self._loop.create_future()
        try:
            send_control(self._sock, {"op": "spawn", **request}, fds)
        except OSError as exc:
            self._spawns.pop(sid, None)
            raise SandboxFailed(f"could not send the spawn request to the zygote: {exc}") from None
        return await fut

    def has_layer(self, sid: str) -> bool:
        """Sandbox `sid` is a layer zygote's child: its layer is mounted already."""
        return sid in self._layer_children

    def configure_layers(self, settings: dict) -> None:
        """Replace the zygote tree's settings (`layer_settings(config)`), now and after restarts."""
        self._layers = settings
        if self._sock is not None:
            with contextlib.suppress(OSError):
                send_control(self._sock, {"op": "configure", "layers": settings})

    def prepare_layer(self, layer_dir: str) -> None:
        """Start the zygote of this dependency layer now (it imports the layer's packages), so
        that the first cold start of a function with this layer is already fast. Best effort:
        nothing happens if the tree is off or the layer's zygote exists already."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                send_control(self._sock, {"op": "prepare_layer", "layer_dir": str(layer_dir)})

    async def wait_layer(self, layer_dir: str, timeout: float) -> bool:
        """Until this layer's zygote has imported its packages (True), or it failed or the
        timeout passed (False)."""
        layer_dir = str(layer_dir)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            state = self._layer_state(layer_dir)
            if state is not None:
                return state
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or self._sock is None:
                return False
            fut = asyncio.get_running_loop().create_future()
            self._layer_waiters.setdefault(layer_dir, []).append(fut)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(fut, remaining)

    def _layer_state(self, layer_dir: str) -> bool | None:
        """True: ready; False: cooling down after failures; None: not there yet."""
        for z in self._layer_report.get("zygotes") or ():
            if z.get("layer_dir") == layer_dir and z.get("state") == "ready":
                return True
        if layer_dir in (self._layer_report.get("cooling_down") or ()):
            return False
        return None

    def _wake_layer_waiters(self) -> None:
        for layer_dir in [d for d in self._layer_waiters if self._layer_state(d) is not None]:
            for fut in self._layer_waiters.pop(layer_dir):
                if not fut.done():
                    fut.set_result(None)

    def statistics(self) -> SpawnerStatistics:
        r = self._layer_report
        zygotes = tuple(
            LayerZygoteStatistics(
                layer_dir=str(z.get("layer_dir")), state=str(z.get("state")), pid=int(z.get("pid") or 0),
                memory_mb=float(z.get("memory_mb") or 0.0), sandboxes=int(z.get("sandboxes") or 0),
                touched_kb=int(z.get("touched_kb") or 0),
                imported=tuple(z.get("imported") or ()), skipped=dict(z.get("skipped") or {}),
                idle_s=float(z.get("idle_s") or 0.0))
            for z in r.get("zygotes") or ())
        return SpawnerStatistics(
            zygote_pid=self.pid, layer_zygotes=zygotes, layer_zygotes_mb=round(sum(z.memory_mb for z in zygotes), 1),
            layer_spawns=int(r.get("spawns") or 0), layer_fallbacks=int(r.get("fallbacks") or 0),
            layer_evictions=int(r.get("evictions") or 0), layer_refused=int(r.get("refused") or 0),
            layer_zygotes_started=int(r.get("started") or 0),
            layers_cooling_down=tuple(r.get("cooling_down") or ()),
            last_layer_spawn=dict(self.last_layer_spawn),
        )

    def cold_start_done(self, sid: str) -> None:
        """Sandbox `sid` answered its first invocation. For the first child of a layer zygote
        that has not learned yet, ask the zygote to learn which pages its cold start un-shared
        (the layer zygote's next children copy those up front)."""
        layer = self._layer_children.pop(sid, None)
        if layer is None:
            return
        learned = any(z.get("layer_dir") == layer and z.get("touched_kb")
                      for z in self._layer_report.get("zygotes") or ())
        if not learned and self._sock is not None:
            with contextlib.suppress(OSError):
                send_control(self._sock, {"op": "learn", "id": sid})

    def learn(self, sid: str) -> None:
        """Ask the zygote to record which pages sandbox `sid` un-shared in its cold start (it
        answers "learned" once, then ignores this; pool sandboxes then copy those pages up
        front). Best effort."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                send_control(self._sock, {"op": "learn", "id": sid})

    async def exit_status(self, sid: str, timeout: float) -> int | None:
        """The sandbox's wait status once the zygote reaped it (None: unknown within timeout)."""
        fut = self._exits.get(sid)
        if fut is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except asyncio.TimeoutError:
            return None

    def forget(self, sid: str) -> None:
        self._exits.pop(sid, None)
        self._layer_children.pop(sid, None)

    async def stop(self, timeout: float = 5.0) -> None:
        """Close the control socket (the zygote kills its sandboxes and exits), then wait for it."""
        if self._sock is not None:
            self._lost()
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError, ValueError):
                if int(self._pid_file.read_text()) == proc.pid:  # a newer zygote may own it now
                    self._pid_file.unlink()
            deadline = asyncio.get_running_loop().time() + timeout
            while proc.poll() is None and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.01)
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.wait)


def kill_stale_zygote(pid_file: Path, root_dir: Path) -> None:
    """Kill a previous run's zygote if the pid file points at a live zygote of this data dir."""
    try:
        pid = int(pid_file.read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return
    if any(b"zygote.main" in arg for arg in argv) and os.fsencode(root_dir) in argv:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
