"""A worker's copies of functions' code and dependency layers, fetched from the control plane.

Code is content-addressed: a version's code is the zip whose sha256 names it. The worker
downloads `GET {control}/v1/cluster/code/{sha}`, checks the bytes hash to that sha (a corrupted
or substituted archive is refused), and extracts it with the same checks as a deploy
(`packaging.extract_zip`: no traversal, no bombs, read-only files) into `code/<sha>/`, once:
later orders find it there. A layer (`layers/<key>/`, keyed by its requirements) comes as a
tar archive with its sha256 in `X-Mist-Sha256`, checked the same way.

Concurrent orders for the same missing code wait on one download.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

import httpx

from mist.cluster.planes import ControlPlanes

from mist.control import packaging
from mist.errors import SandboxFailed

_SHA = re.compile(r"[0-9a-f]{64}")


class CodeCache:
    def __init__(self, root: Path, client: httpx.AsyncClient, control_url: str) -> None:
        self.code_root = root / "code"
        self.layer_root = root / "layers"
        self.code_root.mkdir(parents=True, exist_ok=True)
        self.layer_root.mkdir(parents=True, exist_ok=True)
        self._client = client
        self._planes = ControlPlanes(control_url)
        self._locks: dict[str, asyncio.Lock] = {}
        self._have: dict[str, Path] = {}  # sha -> its extracted directory (code is never removed here)
        self.fetched = 0

    def code(self) -> frozenset[str]:
        """The code shas this worker has (its warm set)."""
        return frozenset(p.name for p in self.code_root.iterdir() if _SHA.fullmatch(p.name))

    def layers(self) -> frozenset[str]:
        return frozenset(p.name for p in self.layer_root.iterdir() if _SHA.fullmatch(p.name))

    async def code_dir(self, sha: str) -> Path:
        dest = self._have.get(sha)
        if dest is not None:  # every order asks: no stat for code already here
            return dest
        dest = self.code_root / sha
        if dest.is_dir():
            self._have[sha] = dest
            return dest
        if not _SHA.fullmatch(sha):
            raise SandboxFailed(f"code {sha!r} is not a sha256")
        async with self._locks.setdefault("code/" + sha, asyncio.Lock()):
            if not dest.is_dir():
                data = await self._get(f"/v1/cluster/code/{sha}")
                if hashlib.sha256(data).hexdigest() != sha:
                    raise SandboxFailed(f"the code archive {sha[:12]} downloaded from the control plane does "
                                        "not hash to its name (corrupted in transit?); the order was refused")
                await asyncio.to_thread(self._extract_zip, data, dest)
                self.fetched += 1
        self._have[sha] = dest
        return dest

    async def layer_dir(self, key: str) -> Path:
        dest = self.layer_root / key
        if dest.is_dir():
            return dest / "python"
        if not _SHA.fullmatch(key):
            raise SandboxFailed(f"layer {key!r} is not a sha256")
        async with self._locks.setdefault("layer/" + key, asyncio.Lock()):
            if not dest.is_dir():
                response = await self._fetch(f"/v1/cluster/layers/{key}")
                data = response.content
                if hashlib.sha256(data).hexdigest() != response.headers.get("x-mist-sha256"):
                    raise SandboxFailed(f"the dependency layer {key[:12]} downloaded from the control plane "
                                        "does not match its checksum (corrupted in transit?)")
                await asyncio.to_thread(_extract_tar, data, dest)
                self.fetched += 1
        return dest / "python"

    async def _fetch(self, path: str) -> httpx.Response:
        try:
            response = await self._planes.request(self._client, "GET", path, timeout=120.0)
        except httpx.HTTPError as exc:
            raise SandboxFailed(f"could not download {path} from the control plane ({exc!r})") from exc
        if response.status_code != 200:
            raise SandboxFailed(f"the control plane answered {response.status_code} for {path}: "
                                f"{response.text[:300]}")
        return response

    async def _get(self, path: str) -> bytes:
        return (await self._fetch(path)).content

    def _extract_zip(self, data: bytes, dest: Path) -> None:
        packaging.extract_zip(io.BytesIO(data), dest)


def _extract_tar(data: bytes, dest: Path) -> None:
    """Into a temporary directory beside `dest`, then renamed into place (atomic)."""
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp"))
    try:
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.seek(0)
            with tarfile.open(fileobj=f, mode="r:") as tar:
                packaging.extract_tar(tar, tmp)
        os.chmod(tmp, 0o755)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def layer_archive(layer_dir: Path) -> bytes:
    """A tar of a layer directory (its `python/` tree), for the workers (control plane side)."""
    with tempfile.TemporaryFile() as f:
        with tarfile.open(fileobj=f, mode="w:") as tar:
            tar.add(layer_dir / "python", arcname="python")
        f.seek(0)
        return f.read()
