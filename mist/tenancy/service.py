"""Tenancy: authenticate API keys, manage tenants and keys, and bootstrap the first admin key.

Authentication is on every request, so it is answered from memory: every key (its id, tenant,
role, expiry, revocation and the SHA-256 of the key) is loaded at start and refreshed from the
store every `refresh_s` seconds; a key created or revoked through this process takes effect
here at once; on the other processes of a cluster (`mist up --db`) within ~1 s, when the
change feed calls `refresh` (mist/control/changes.py), and within `refresh_s` in any case.

    tenancy = Tenancy(store)
    await tenancy.start()
    admin_key = await tenancy.bootstrap(data_dir)      # the first start: a new admin key
    principal = tenancy.authenticate("mist_3f2a...")  # Unauthenticated if unknown/revoked/expired
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from mist.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthenticated
from mist.models import DEFAULT_TENANT
from mist.tenancy import model
from mist.tenancy.model import ApiKey, Tenant, TenantLimits
from mist.tenancy.roles import GRANTABLE, Caller, Principal, Role, check_tenant_name
from mist.tenancy.store import TenantStore

log = logging.getLogger("mist.tenancy")

ADMIN_KEY_FILE = "admin.key"
KEY_NAME_MAX = 200


class Tenancy:
    def __init__(self, store: TenantStore, *, clock: Callable[[], float] = time.time, refresh_s: float = 5.0) -> None:
        self._store = store
        self._clock = clock
        self._refresh_s = refresh_s
        self._keys: dict[str, ApiKey] = {}
        self._verified: dict[str, tuple[ApiKey, Principal]] = {}  # presented key -> verified key (a cache)
        self._tenants: dict[str, Tenant] = {}
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], None]] = []

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._refresh_loop(), name="tenancy-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def now(self) -> float:
        return self._clock()

    def on_change(self, listener: Callable[[], None]) -> None:
        """`listener()` after tenants (their limits) may have changed."""
        self._listeners.append(listener)

    async def refresh(self) -> None:
        keys, tenants = await asyncio.to_thread(lambda: (self._store.list_keys(), self._store.list_tenants()))
        self._keys = {k.key_id: k for k in keys}
        self._verified = {}  # revocations and changed roles take effect: keys are verified again
        self._tenants = {t.name: t for t in tenants}
        for listener in self._listeners:
            listener()

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_s)
            try:
                await self.refresh()
            except Exception:  # noqa: BLE001 - keep serving with what we have; try again next time
                log.exception("could not refresh tenants and keys")

    async def bootstrap(self, data_dir: Path, *, shared: bool = False) -> str | None:
        """Make sure the default tenant exists and DATA_DIR/admin.key (mode 0600) holds a usable
        admin key. Returns the key if one was created now (to print once), else None.

        `shared` (`mist up --db`, run under a cluster-wide lock): only the cluster's first start
        makes an admin key; a later process of the cluster, with a data dir of its own, makes
        none while any usable admin key of the default tenant exists (its operator copies
        admin.key from the first one, or uses a key made with `mist key create`)."""
        if DEFAULT_TENANT not in self._tenants:
            with contextlib.suppress(Conflict):
                await asyncio.to_thread(self._store.add_tenant, Tenant(DEFAULT_TENANT, self._clock()))
        await self.refresh()
        path = data_dir / ADMIN_KEY_FILE
        with contextlib.suppress(OSError, Unauthenticated):
            if self.authenticate(path.read_text().strip()).is_admin:
                return None
        now = self._clock()
        if shared and any(k.tenant == DEFAULT_TENANT and k.role is Role.ADMIN and k.usable(now)
                          for k in self._keys.values()):
            log.info("the cluster has an admin key already (made by another mist up): none made here")
            return None
        name = "cluster admin key (created by mist up --db)" if shared else f"admin key of {data_dir} (created by mist up)"
        _, secret = await self._add_key(DEFAULT_TENANT, Role.ADMIN, name, None)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secret + "\n")
        os.replace(tmp, path)
        return secret

    # -- authentication (memory only: the request path) -----------------------------------------

    def authenticate(self, token: str) -> Principal:
        hit = self._verified.get(token)  # a key seen before: no parsing, no hashing
        if hit is not None:
            key, principal = hit
            if key.expires_at is None or self._clock() < key.expires_at:
                return principal
        key_id = model.key_id_of(token)
        key = self._keys.get(key_id) if key_id else None
        if key is None or not model.same_digest(key.digest, model.digest(token)):
            raise Unauthenticated(
                "the API key is not valid; pass a key mist gave you (Authorization: Bearer mist_...); "
                "mist up wrote the admin key to DATA_DIR/admin.key"
            )
        if not key.usable(self._clock()):
            raise Unauthenticated(f"the API key {key.key_id} is {key.state(self._clock())}; ask for a new one "
                                  "(mist key create)")
        principal = Principal(key.key_id, key.tenant, key.role, key.name)
        if len(self._verified) > 10_000:
            self._verified.clear()
        self._verified[token] = (key, principal)
        return principal

    def tenant(self, name: str) -> Tenant | None:
        return self._tenants.get(name)

    def tenants(self) -> list[Tenant]:
        return list(self._tenants.values())

    def require_tenant(self, name: str) -> Tenant:
        found = self._tenants.get(name)
        if found is None:
            raise NotFound(f"no tenant {name!r}; `mist tenant ls` lists them, `mist tenant create {name}` makes it")
        return found

    # -- tenants --------------------------------------------------------------------------------

    async def create_tenant(self, name: object, limits: object = None) -> Tenant:
        tenant = Tenant(check_tenant_name(name), self._clock(),
                        TenantLimits.from_json(limits) if limits is not None else TenantLimits())
        await asyncio.to_thread(self._store.add_tenant, tenant)
        await self.refresh()
        return tenant

    async def set_limits(self, name: str, changes: object) -> Tenant:
        current = self.require_tenant(name)
        limits = TenantLimits.from_json(changes, base=current.limits)
        if not await asyncio.to_thread(self._store.set_limits, name, limits):
            raise NotFound(f"no tenant {name!r}")
        await self.refresh()
        return self.require_tenant(name)

    async def delete_tenant(self, name: str, has_functions: Callable[[str], Awaitable[bool]]) -> None:
        self.require_tenant(name)
        if name == DEFAULT_TENANT:
            raise Conflict("the default tenant cannot be deleted")
        if await has_functions(name):
            raise Conflict(f"tenant {name!r} still has functions; delete them first (mist ls --tenant {name})")
        now = self._clock()
        for key in [k for k in self._keys.values() if k.tenant == name and k.revoked_at is None]:
            await asyncio.to_thread(self._store.revoke_key, key.key_id, now)
        await asyncio.to_thread(self._store.delete_tenant, name)
        await self.refresh()

    # -- keys -----------------------------------------------------------------------------------

    async def create_key(self, by: Caller, role: object, name: object = "",
                         expires_at: float | None = None) -> tuple[ApiKey, str]:
        """A new key in `by.tenant`. A tenant-admin may hand out its own role and those below it;
        only an admin may make admin keys."""
        wanted = Role.parse(role)
        granter = by.principal.role if by.principal else None
        if granter is None or wanted not in GRANTABLE.get(granter, frozenset()):
            raise Forbidden(f"a {granter.value if granter else 'anonymous'} key cannot create {wanted.value} keys")
        if wanted is Role.ADMIN and by.tenant != DEFAULT_TENANT:
            raise InvalidRequest("admin keys act in every tenant and belong to the default tenant; "
                                 "create them without --tenant")
        if not isinstance(name, str) or len(name) > KEY_NAME_MAX:
            raise InvalidRequest(f"name must be text of at most {KEY_NAME_MAX} characters")
        if expires_at is not None and expires_at <= self._clock():
            raise InvalidRequest("expires_at is in the past; give a time in the future (or none for no expiry)")
        self.require_tenant(by.tenant)
        return await self._add_key(by.tenant, wanted, name, expires_at)

    async def _add_key(self, tenant: str, role: Role, name: str, expires_at: float | None) -> tuple[ApiKey, str]:
        key_id, secret = model.new_key()
        key = ApiKey(key_id, tenant, role, name, model.digest(secret), self._clock(), expires_at)
        await asyncio.to_thread(self._store.add_key, key)
        self._keys[key_id] = key
        return key, secret

    def list_keys(self, tenant: str | None) -> list[ApiKey]:
        keys = [k for k in self._keys.values() if tenant is None or k.tenant == tenant]
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    async def revoke_key(self, tenant: str | None, key_id: str) -> ApiKey:
        """Revoke a key of `tenant` (None: any tenant, for admins). Another tenant's key is not found."""
        key = self._keys.get(key_id)
        if key is None or (tenant is not None and key.tenant != tenant):
            raise NotFound(f"no API key {key_id!r}; `mist key ls` lists them")
        now = self._clock()
        await asyncio.to_thread(self._store.revoke_key, key_id, now)
        await self.refresh()
        return self._keys[key_id]
