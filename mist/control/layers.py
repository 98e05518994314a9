"""Dependency layers: a function's requirements.txt installed once, shared by content hash.

A layer lives at `DATA/layers/<sha256 of requirements.txt>/` and is mounted read-only at
/opt/python in the function's sandboxes. Two functions with the same requirements.txt (byte
for byte) share one layer; concurrent deploys of the same file install it once. pip runs with
the same interpreter the sandboxes run, into a temporary directory renamed into place only
when the install succeeded, so a failed or interrupted install never leaves a half layer.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

from mist.errors import DependencyInstallFailed

Progress = Callable[[dict[str, object]], Awaitable[None]]


def layer_key(requirements: bytes) -> str:
    return hashlib.sha256(requirements).hexdigest()


class LayerStore:
    def __init__(self, root: Path, *, python: str = sys.executable, install_timeout_s: float = 1800) -> None:
        self.root = root
        self.python = python
        self.install_timeout_s = install_timeout_s
        self._locks: dict[str, asyncio.Lock] = {}
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / key

    async def ensure(self, requirements: bytes, progress: Progress) -> str:
        """Install `requirements` unless a layer for them exists; return the layer key."""
        key = layer_key(requirements)
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            if self.path(key).is_dir():
                await progress({"event": "layer", "status": "cached", "sha256": key})
                return key
            await progress({"event": "layer", "status": "installing", "sha256": key})
            await self._install(key, requirements, progress)
        return key

    async def _install(self, key: str, requirements: bytes, progress: Progress) -> None:
        work = self.root / f".tmp-{key}-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        (work / "python").mkdir(parents=True)
        req_file = work / "requirements.txt"
        req_file.write_bytes(requirements)
        cmd = [
            self.python, "-m", "pip", "install",
            "--target", str(work / "python"),
            "--requirement", str(req_file),
            "--no-input", "--disable-pip-version-check", "--progress-bar", "off",
            "--no-warn-script-location", "--no-cache-dir",
        ]  # fmt: skip
        tail: deque[str] = deque(maxlen=40)
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PIP_NO_COLOR": "1"},
        )
        assert proc.stdout is not None
        try:
            async with asyncio.timeout(self.install_timeout_s):
                async for raw in proc.stdout:
                    line = raw.decode("utf-8", "replace").rstrip()
                    if line:
                        tail.append(line)
                        await progress({"event": "pip", "line": line})
                code = await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            shutil.rmtree(work, ignore_errors=True)
            raise DependencyInstallFailed(
                f"installing requirements.txt took longer than {self.install_timeout_s:g} s and was stopped",
                detail="\n".join(tail),
            ) from None
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            shutil.rmtree(work, ignore_errors=True)
            raise
        if code != 0:
            shutil.rmtree(work, ignore_errors=True)
            raise DependencyInstallFailed(
                "pip could not install requirements.txt (see the detail for pip's output); "
                "fix the file and deploy again",
                detail="\n".join(tail),
            )
        await asyncio.to_thread(_make_readable, work)
        try:
            os.rename(work, self.path(key))
        except OSError:  # another process installed the same layer meanwhile
            shutil.rmtree(work, ignore_errors=True)


def _make_readable(root: Path) -> None:
    """Sandboxes run as unprivileged uids: every file readable, every dir traversable, none writable."""
    for dirpath, dirnames, filenames in os.walk(root):
        os.chmod(dirpath, 0o555)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                mode = os.stat(p).st_mode
                os.chmod(p, 0o555 if mode & 0o111 else 0o444)
