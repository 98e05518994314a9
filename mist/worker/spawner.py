"""The Worker's handle on its zygote process (see zygote.py for the control protocol).

`start()` launches `python -I -S` on a bootstrap that imports only mist.worker's sandbox-side
modules (the package `__init__` files are not run, so the zygote stays small), then waits for
its hello. `spawn()` sends a request with the sandbox's channel and output fds and returns the
sandbox's pid and pidfd. `exit_status(sid)` resolves when the zygote reaps that sandbox.
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
from pathlib import Path

from mist.errors import SandboxFailed
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


def _pyseccomp_dir() -> str:
    spec = importlib.util.find_spec("pyseccomp")
    if spec is None or spec.origin is None:
        raise SandboxFailed("pyseccomp is not installed; the zygote needs it to build the seccomp filter")
    return str(Path(spec.origin).parent)


class Spawner:
    def __init__(self, python: str, root_dir: Path, pid_file: Path) -> None:
        self._python = python
        self._root_dir = root_dir
        self._pid_file = pid_file
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._hello: asyncio.Future | None = None
        self._spawns: dict[str, asyncio.Future] = {}
        self._exits: dict[str, asyncio.Future] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.learned_kb = 0  # the zygote learned which pages a cold start un-shares (see learn)

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
        except (asyncio.TimeoutError, SandboxFailed) as exc:
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

    def attach_code(self, sid: str, code_dir: str, layer_dir: str | None) -> None:
        """Ask the zygote to mount the function's code in sandbox `sid` (it tells the sandbox
        itself when done, or why it failed; the sandbox then reports FAILED)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                send_control(self._sock, {"op": "mount", "id": sid, "code_dir": code_dir, "layer_dir": layer_dir})

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
