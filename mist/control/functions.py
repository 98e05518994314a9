"""FunctionService: deploys, configuration changes, deletes, and name -> version resolution.

A deploy, step by step (each step reported to `progress` for `mist deploy`'s live output):
  1. the name is checked (`[a-z0-9][a-z0-9-]{0,62}`) and the config validated (models.py);
  2. the uploaded zip is validated and extracted into `code/<sha256 of the zip>/` (skipped when
     that content was deployed before; files read-only, later bind-mounted at /var/task);
  3. the code is checked: every .py compiles, the handler's module and function exist;
  4. a top-level requirements.txt is installed into a shared dependency layer (layers.py);
  5. a new immutable FunctionVersion is stored; the name now resolves to it and idle instances of
     older versions are retired (busy ones finish their invocation first).

A function's secrets (mist/secrets/) are not part of its versions: `spec()` adds them to the
environment of every instance it describes (over `env` of the same name), and changing them
(`change_secrets`) restarts the function's instances, every version's.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path

from mist.control import packaging
from mist.control.blobs import BlobStore
from mist.control.layers import LayerStore, Progress, layer_key
from mist.control.store import FunctionStore, NewVersion
from mist.errors import DeployRejected, InvalidRequest, MistError, NotFound, PlatformError
from mist.models import DEFAULT_HANDLER, FunctionConfig, FunctionSummary, FunctionVersion, split_id
from mist.secrets.model import SecretInfo
from mist.secrets.service import SecretService
from mist.worker.types import SandboxSpec

log = logging.getLogger(__name__)
VERSION_MAX = 2**31 - 1  # function_versions.version is an INTEGER column

Clock = Callable[[], datetime]
Retire = Callable[[str, int | None], Awaitable[None]]
Provision = Callable[[SandboxSpec], Awaitable[int]]
Restart = Callable[[str, int], Awaitable[None]]  # (function id, its secrets' new revision): Worker.restart


async def _no_provision(_: SandboxSpec) -> int:
    return 0


async def _no_progress(_: dict[str, object]) -> None:
    return None


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _keep_archive(source: Path | bytes, archive: Path) -> None:
    tmp = archive.with_name(f".{archive.name}.{os.getpid()}.tmp")
    if isinstance(source, bytes):
        tmp.write_bytes(source)
    else:
        shutil.copyfile(source, tmp)
    tmp.chmod(0o444)
    tmp.rename(archive)


def _missing(fid: str) -> NotFound:
    return NotFound(f"function {split_id(fid)[1]!r} does not exist; `mist ls` lists the deployed functions")


class FunctionService:
    def __init__(
        self,
        data_dir: Path,
        store: FunctionStore,
        layers: LayerStore,
        retire: Retire,
        *,
        provision: Provision = _no_provision,
        clock: Clock = _utcnow,
        secrets: SecretService | None = None,
        restart: Restart | None = None,
        blobs: BlobStore | None = None,
        runs_code: bool = True,
    ) -> None:
        """`secrets`: None serves no secrets; `restart`: how instances are replaced when a
        function's secrets change (default: retired like a deleted function's); `blobs`: where
        code and layers are shared with the other processes of a cluster (None: one process,
        its data dir holds them); `runs_code` False (a cluster's gateway, which forwards every
        invocation): a function's code is not fetched and unpacked here to invoke it."""
        self.code_root = data_dir / "code"
        self.code_root.mkdir(parents=True, exist_ok=True)
        self._store = store
        self._layers = layers
        self._retire = retire
        self._provision = provision
        self._clock = clock
        self.secrets = secrets
        self._restart = restart
        self._blobs = blobs
        self._runs_code = runs_code
        self._followed: dict[str, tuple[int, datetime]] | None = None  # follow(): newest version seen per id
        self._latest: dict[str, FunctionVersion] = {}
        self._versions: dict[tuple[str, int], FunctionVersion] = {}
        self._specs: dict[tuple[str, int], tuple[FunctionVersion, object, SandboxSpec]] = {}  # spec()'s
        self._provisioned: dict[str, FunctionVersion] = {}  # id -> newest version, if it has min_instances
        self._extract_locks: dict[str, asyncio.Lock] = {}
        self._listeners: list[Callable[[str, FunctionVersion | None], None]] = []
        self._checks: list[Callable[[str, FunctionConfig], None]] = []

    def on_change(self, listener: Callable[[str, FunctionVersion | None], None]) -> None:
        """`listener(id, newest version)` after each deploy or change; (id, None) after a delete."""
        self._listeners.append(listener)

    def add_check(self, check: Callable[[str, FunctionConfig], None]) -> None:
        """`check(id, config)` before a version is created: it raises to refuse the config."""
        self._checks.append(check)

    # -- resolution (the hot path: served from memory) -------------------------------------

    async def resolve(self, name: str, version: int | None = None) -> FunctionVersion:
        if version is None:
            fv = self._latest.get(name)
            if fv is None:
                summary = await asyncio.to_thread(self._store.get_function, name)
                if summary is None:
                    raise _missing(name)
                await self.materialise(summary.latest)
                fv = self._latest[name] = summary.latest
            return fv
        fv = self._versions.get((name, version))
        if fv is None:
            found = []  # beyond what a database column holds (a 32-bit integer): none such, not an overflow
            if 0 < version <= VERSION_MAX:
                found = await asyncio.to_thread(self._store.get_versions, name, version)
            if not found:
                if await asyncio.to_thread(self._store.get_function, name) is None:
                    raise _missing(name)
                local = split_id(name)[1]
                raise NotFound(f"function {local!r} has no version {version}; `mist show {local}` shows its versions")
            await self.materialise(found[0])
            fv = self._versions[(name, version)] = found[0]
        return fv

    def spec(self, fv: FunctionVersion) -> SandboxSpec:
        """What an instance of `fv` runs with. SecretsUnavailable if the function has secrets
        this server's key does not open. Built once per version and state of its secrets (this
        is asked on every invocation)."""
        token = self.secrets.token(fv.name) if self.secrets is not None else None
        cached = self._specs.get((fv.name, fv.version))
        if cached is not None and cached[0] is fv and cached[1] is token:
            return cached[2]
        spec = self._build_spec(fv)
        self._specs[(fv.name, fv.version)] = (fv, token, spec)
        return spec

    def _build_spec(self, fv: FunctionVersion) -> SandboxSpec:
        env, revision, redactor = fv.env, 0, None
        if self.secrets is not None:
            secret_env = self.secrets.environment(fv.name)
            if secret_env:
                env = {**env, **secret_env}
                redactor = self.secrets.redactor(fv.name)
            revision = self.secrets.revision(fv.name)
        return SandboxSpec(
            function_name=fv.name,
            version=fv.version,
            code_dir=self.code_root / fv.code_sha256,
            handler=fv.handler,
            memory_mb=fv.memory_mb,
            timeout_s=fv.timeout_s,
            concurrency=fv.concurrency,
            env=tuple(sorted(env.items())),
            layer_dir=(self._layers.path(fv.layer_sha256) / "python") if fv.layer_sha256 else None,
            min_instances=fv.min_instances,
            max_instances=fv.max_instances,
            egress=fv.network,
            tenant=fv.tenant,
            revision=revision,
            redactor=redactor,
        )

    # -- reads -----------------------------------------------------------------------------

    async def get(self, name: str) -> FunctionSummary:
        packaging.validate_id(name)
        summary = await asyncio.to_thread(self._store.get_function, name)
        if summary is None:
            raise _missing(name)
        return summary

    async def list(self, tenant: str | None = None) -> list[FunctionSummary]:
        """Every function, or those of `tenant`."""
        found = await asyncio.to_thread(self._store.list_functions)
        return found if tenant is None else [f for f in found if split_id(f.name)[0] == tenant]

    async def versions(self, name: str) -> list[FunctionVersion]:
        await self.get(name)
        return await asyncio.to_thread(self._store.get_versions, name)

    # -- writes ----------------------------------------------------------------------------

    async def deploy(
        self, name: str, config: object, zip_path: Path, progress: Progress = _no_progress
    ) -> FunctionVersion:
        packaging.validate_id(name)
        cfg = FunctionConfig.from_json(config if config is not None else {})
        await progress({"event": "received", "bytes": zip_path.stat().st_size})
        sha, size, files = await self._extract(zip_path)
        await self._share("code", sha, zip_path.read_bytes)
        await progress({"event": "validated", "files": files})
        return await self._create(name, cfg, sha, size, progress)

    async def update_config(self, name: str, config: object) -> FunctionVersion:
        current = (await self.get(name)).latest
        # deployed through another process of a cluster: its code is checked here
        await self.materialise(current, to_check=True)
        cfg = FunctionConfig.from_json(config, base=current.config())
        return await self._create(name, cfg, current.code_sha256, current.code_size, _no_progress)

    async def delete(self, name: str) -> None:
        packaging.validate_id(name)
        existed = await asyncio.to_thread(self._store.delete_function, name)
        self._latest.pop(name, None)
        for key in [k for k in self._versions if k[0] == name]:
            del self._versions[key]
            self._specs.pop(key, None)
        if not existed:
            raise _missing(name)
        if self._followed is not None:
            self._followed.pop(name, None)
        self._provisioned.pop(name, None)
        for listener in self._listeners:
            listener(name, None)
        await self._retire(name, None)
        if self.secrets is not None:
            await self.secrets.forget(name)
        await self._remove_unused_code()

    async def _remove_unused_code(self) -> None:
        in_use = await asyncio.to_thread(self._store.code_in_use)
        for entry in self.code_root.iterdir():
            if entry.is_dir() and entry.name not in in_use and not entry.name.startswith("."):
                await asyncio.to_thread(packaging.remove_tree, entry)
            elif entry.suffix == ".zip" and entry.stem not in in_use:
                entry.unlink(missing_ok=True)

    async def _create(
        self, name: str, cfg: FunctionConfig, sha: str, size: int, progress: Progress
    ) -> FunctionVersion:
        for key, dest in (("on_success", cfg.on_success), ("on_failure", cfg.on_failure)):
            if dest == f"function:{split_id(name)[1]}":
                raise InvalidRequest(
                    f"{key} cannot be the function itself ({dest}): each of its events would invoke it "
                    "again, without end; use another function or a queue"
                )
        for check in self._checks:
            check(name, cfg)
        code_dir = self.code_root / sha
        handler = cfg.handler
        if handler is None:
            handler = await asyncio.to_thread(packaging.find_default_handler, code_dir)
        await asyncio.to_thread(packaging.check_code, code_dir, handler)
        layer = None
        requirements = code_dir / "requirements.txt"
        if requirements.is_file() and requirements.read_bytes().strip():
            await self._fetch_layer(layer_key(requirements.read_bytes()))  # another process built it: no pip here
            layer = await self._layers.ensure(requirements.read_bytes(), progress)
            await self._share("layer", layer, lambda: self._layers.pack(layer))
        new = NewVersion(
            name=name,
            handler=handler,
            memory_mb=cfg.memory_mb,
            timeout_s=cfg.timeout_s,
            concurrency=cfg.concurrency,
            env=dict(cfg.env),
            code_sha256=sha,
            code_size=size,
            layer_sha256=layer,
            min_instances=cfg.min_instances,
            max_instances=cfg.max_instances,
            retries=cfg.retries,
            max_event_age_s=cfg.max_event_age_s,
            on_success=cfg.on_success,
            on_failure=cfg.on_failure,
            http_auth=cfg.http_auth,
            network=cfg.network,
            reserved_concurrency=cfg.reserved_concurrency,
            rate_per_s=cfg.rate_per_s,
            burst=cfg.burst,
            max_queued=cfg.max_queued,
        )
        fv = await asyncio.to_thread(self._store.create_version, new, self._clock())
        latest = self._latest.get(name)
        if latest is None or latest.version < fv.version:
            self._latest[name] = fv
            if self._followed is not None:
                self._followed[name] = (fv.version, fv.created_at)
            for listener in self._listeners:
                listener(name, fv)
        self._versions[(name, fv.version)] = fv
        await self._retire(name, fv.version)
        await self.provision(fv)
        await progress({"event": "created", "version": fv.to_json()})
        return fv

    # -- secrets -------------------------------------------------------------------------------

    async def list_secrets(self, name: str) -> list[SecretInfo]:
        await self.get(name)
        return self._secret_service().list(name)

    async def change_secrets(self, name: str, patch: object) -> list[SecretInfo]:
        """Set (a string) and remove (null) secrets of the function in one change, then restart
        its instances: calls from now on get new instances with the new values; calls running
        finish with the old ones."""
        await self.get(name)
        secrets = self._secret_service()
        out = await secrets.change(name, patch)
        await self.restart(name)
        return out

    async def restart(self, name: str) -> None:
        """Replace every instance of the function (and start its provisioned ones again)."""
        revision = self.secrets.revision(name) if self.secrets is not None else 0
        if self._restart is not None:
            await self._restart(name, revision)
        else:
            await self._retire(name, None)
        latest = self._latest.get(name) or (await self.get(name)).latest
        if latest.min_instances > 0:
            await self.provision(latest)

    def _secret_service(self) -> SecretService:
        if self.secrets is None:
            raise PlatformError("secrets are not served here; this server was started without a secrets key")
        return self.secrets

    async def provision(self, fv: FunctionVersion) -> None:
        """Start the version's min_instances (a short budget only delays them: the worker keeps
        trying, and the function still serves on demand meanwhile). `fv` is the newest version."""
        kept = self._provisioned.get(fv.name)
        if kept is None or kept.version <= fv.version:
            if fv.min_instances > 0:
                self._provisioned[fv.name] = fv
            else:
                self._provisioned.pop(fv.name, None)
        try:
            await self.materialise(fv)
            await self._provision(self.spec(fv))
        except MistError as exc:
            log.warning("%s:%s: provisioned instances not all started yet: %s", fv.name, fv.version, exc.message)

    async def provision_all(self) -> None:
        for summary in await self.list():
            if summary.latest.min_instances > 0:
                await self.provision(summary.latest)

    def provisioned(self) -> list[SandboxSpec]:
        """The specs of the functions whose newest version has min_instances, from memory (kept
        by deploys, deletes, `provision_all` and `follow`): what a cluster scheduler checks are
        running on some worker (mist/core/provisioning.py). A function whose secrets this
        process cannot open is left out (its deploy logged why)."""
        specs = []
        for fv in list(self._provisioned.values()):
            try:
                specs.append(self.spec(fv))
            except MistError:
                continue
        return specs

    # -- a cluster: code and layers shared, changes followed (mist up --db, docs/cluster.md) ----------

    async def _share(self, kind: str, key: str, read: Callable[[], bytes]) -> None:
        """Put a code archive or layer in the shared blobs (once per cluster)."""
        if self._blobs is None or await asyncio.to_thread(self._blobs.has_blob, kind, key):
            return
        data = await asyncio.to_thread(read)
        await asyncio.to_thread(self._blobs.put_blob, kind, key, data)

    async def _fetch_layer(self, key: str) -> bool:
        """Install the layer `key` from the shared blobs if this process lacks it; whether it is here now."""
        if self._layers.path(key).is_dir():
            return True
        if self._blobs is None:
            return False
        lock = self._extract_locks.setdefault(f"layer:{key}", asyncio.Lock())
        async with lock:
            if not self._layers.path(key).is_dir():
                data = await asyncio.to_thread(self._blobs.get_blob, "layer", key)
                if data is None:
                    return False
                await asyncio.to_thread(self._layers.unpack, key, data)
                log.info("dependency layer %s fetched from the cluster (%d bytes)", key[:12], len(data))
        return True

    async def materialise(self, fv: FunctionVersion, *, to_check: bool = False) -> None:
        """Make sure this process has `fv`'s code and layer on disk: with shared blobs, those
        another process received are fetched (sha256 checked) and extracted here, once. A
        process that runs no code (`runs_code` False) fetches it only `to_check` it."""
        if self._blobs is None or not (self._runs_code or to_check):
            return
        sha = fv.code_sha256
        dest = self.code_root / sha
        if not dest.is_dir():
            async with self._extract_locks.setdefault(sha, asyncio.Lock()):
                if not dest.is_dir():
                    data = await asyncio.to_thread(self._blobs.get_blob, "code", sha)
                    if data is None or hashlib.sha256(data).hexdigest() != sha:
                        raise PlatformError(
                            f"the code of {fv.name} version {fv.version} ({sha[:12]}) is not in the cluster's "
                            "database (deployed before --db was used?); deploy the function again")
                    await asyncio.to_thread(packaging.extract_zip, io.BytesIO(data), dest)
                    archive = self.code_root / f"{sha}.zip"  # what this process's worker agents download
                    if not archive.exists():
                        await asyncio.to_thread(_keep_archive, data, archive)
                    log.info("code %s of %s fetched from the cluster (%d bytes)", sha[:12], fv.name, len(data))
        if fv.layer_sha256 and not await self._fetch_layer(fv.layer_sha256):
            raise PlatformError(f"the dependency layer of {fv.name} version {fv.version} is not in the cluster's "
                                "database; deploy the function again")

    async def follow(self) -> list[str]:
        """Catch up with what other processes did to functions (ChangeFeed topic "functions"):
        a new newest version or a delete is handled as if made here (caches dropped, listeners
        told, instances of other versions retired, provisioned instances started). The first
        call only records what exists. Returns the ids that changed."""
        newest = {s.name: s.latest for s in await self.list()}
        seen = {name: (fv.version, fv.created_at) for name, fv in newest.items()}
        if self._followed is None:
            self._followed = seen
            return []
        changed = sorted(n for n in set(seen) | set(self._followed) if seen.get(n) != self._followed.get(n))
        self._followed = seen
        for name in changed:
            self._latest.pop(name, None)
            for key in [k for k in self._versions if k[0] == name]:
                del self._versions[key]
                self._specs.pop(key, None)
            fv = newest.get(name)
            if fv is None or fv.min_instances == 0:
                self._provisioned.pop(name, None)
            for listener in self._listeners:
                listener(name, fv)
            await self._retire(name, fv.version if fv is not None else None)
            if fv is not None and fv.min_instances > 0:
                await self.provision(fv)
        if any(n not in newest for n in changed):
            await self._remove_unused_code()
        return changed

    async def _extract(self, zip_path: Path) -> tuple[str, int, int]:
        """Validate and extract the zip into code/<sha>/; return (sha, zip size, file count)."""
        sha = await asyncio.to_thread(packaging.sha256_file, zip_path)
        size = zip_path.stat().st_size
        dest = self.code_root / sha
        lock = self._extract_locks.setdefault(sha, asyncio.Lock())
        async with lock:
            if not dest.is_dir():
                await asyncio.to_thread(packaging.extract_zip, zip_path, dest)
            archive = self.code_root / f"{sha}.zip"  # what cluster workers download (by this sha)
            if not archive.exists():
                await asyncio.to_thread(_keep_archive, zip_path, archive)
        files = sum(len(f) for d, _, f in os.walk(dest) if "__pycache__" not in Path(d).parts)
        if files == 0:
            raise DeployRejected("the code archive is empty; put your handler in main.py (or pass --handler)")
        return sha, size, files


__all__ = ["FunctionService", "DEFAULT_HANDLER"]
