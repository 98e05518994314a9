"""Dependency layers: a function's requirements.txt installed once, shared by content hash.

A layer lives at `DATA/layers/<sha256 of requirements.txt>/` and is mounted read-only at
/opt/python in the function's sandboxes. Two functions with the same requirements.txt (byte
for byte) share one layer; concurrent deploys of the same file install it once. pip runs with
the same interpreter the sandboxes run, into a temporary directory renamed into place only
when the install succeeded, so a failed or interrupted install never leaves a half layer.

Installing a package can run its own code, chosen by whoever deployed the function, so with a
`jail` (what `mist up` always gives) pip runs as an unprivileged uid in a jail of its own: a
private /tmp, nothing of mist's data dir but its work directory, a minimal environment, and no
way to the host's own addresses (mist/control/buildjail.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import shutil
import sys
import tarfile
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

from mist.control import buildjail, packaging
from mist.errors import DependencyInstallFailed

Progress = Callable[[dict[str, object]], Awaitable[None]]


def layer_key(requirements: bytes) -> str:
    return hashlib.sha256(requirements).hexdigest()


class LayerStore:
    def __init__(self, root: Path, *, python: str = sys.executable, install_timeout_s: float = 1800,
                 jail: BuildJail | None = None) -> None:
        self.root = root
        self.python = python
        self.install_timeout_s = install_timeout_s
        self.jail = jail
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
        inside = Path(buildjail.JAIL_WORK) if self.jail is not None else work
        pip_args = [
            "install",
            "--target", str(inside / "python"),
            "--requirement", str(inside / "requirements.txt"),
            "--no-input", "--disable-pip-version-check", "--progress-bar", "off",
            "--no-warn-script-location", "--no-cache-dir",
        ]  # fmt: skip
        if self.jail is not None:
            await asyncio.to_thread(self.jail.prepare, work)
            cmd = buildjail.jail_argv(self.python, work, self.jail.uid, pip_args)
            env = buildjail.jail_env(dict(os.environ))
        else:
            cmd = [self.python, "-m", "pip", *pip_args]
            env = {**os.environ, "PYTHONUNBUFFERED": "1", "PIP_NO_COLOR": "1"}
        tail: deque[str] = deque(maxlen=40)
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
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
        await asyncio.to_thread(_make_readable, work, self.jail is not None)
        try:
            os.rename(work, self.path(key))
        except OSError:  # another process installed the same layer meanwhile
            shutil.rmtree(work, ignore_errors=True)


    def pack(self, key: str) -> bytes:
        """The layer's python/ tree as a tar.gz (mist/control/blobs.py: shared with a cluster)."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
            tar.add(self.path(key) / "python", arcname="python")
        return buf.getvalue()

    def unpack(self, key: str, data: bytes) -> None:
        """Install a layer another process built (`pack`'s output) as this store's layer `key`:
        extracted aside (regular files and directories only, nothing outside the tree), made
        read-only and root's, then renamed into place."""
        if self.path(key).is_dir():
            return
        work = self.root / f".tmp-{key}-{os.getpid()}-unpack"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                packaging.extract_tar(tar, work)
            _make_readable(work, owned_by_root=os.geteuid() == 0)
            os.rename(work, self.path(key))
        except OSError:
            if not self.path(key).is_dir():
                raise
        finally:
            if work.exists():
                for dirpath, _, _ in os.walk(work):
                    os.chmod(dirpath, 0o755)
                shutil.rmtree(work, ignore_errors=True)


class BuildJail:
    """What LayerStore needs to jail pip: the build uid, and the nftables rules for it applied
    once (`network`: None when the host has no nftables: the install is then refused, never run
    unconfined)."""

    def __init__(self, uid: int, table: str, *, deny: tuple[str, ...] = ()) -> None:
        self.uid = uid
        self.table = table
        self.deny = deny
        self._applied = False

    def prepare(self, work: Path) -> None:
        """Before each install: the rules are in place, and the work dir belongs to the build uid."""
        if not self._applied:
            from mist.worker.nft import Nft

            nft = Nft()
            try:
                nft.run(buildjail.network_rules(self.table, self.uid, buildjail.nameservers(), self.deny))
            finally:
                nft.close()
            self._applied = True
        for dirpath, _, filenames in os.walk(work):
            os.chown(dirpath, self.uid, self.uid)
            for f in filenames:
                os.chown(os.path.join(dirpath, f), self.uid, self.uid, follow_symlinks=False)

    def close(self) -> None:
        if self._applied:
            from mist.worker.nft import Nft

            nft = Nft()
            try:
                nft.run(f"table inet {self.table}\ndelete table inet {self.table}\n")
            except OSError:
                pass
            finally:
                nft.close()
            self._applied = False


def _make_readable(root: Path, owned_by_root: bool = False) -> None:
    """Sandboxes run as unprivileged uids: every file readable, every dir traversable, none
    writable; and, after a jailed install, nothing owned by the build uid any more."""
    for dirpath, dirnames, filenames in os.walk(root):
        if owned_by_root:
            os.chown(dirpath, 0, 0)
            for f in filenames:
                os.chown(os.path.join(dirpath, f), 0, 0, follow_symlinks=False)
        os.chmod(dirpath, 0o555)
        for f in filenames:
            p = os.path.join(dirpath, f)
            if not os.path.islink(p):
                mode = os.stat(p).st_mode
                os.chmod(p, 0o555 if mode & 0o111 else 0o444)
