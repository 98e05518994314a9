"""MemoryTenantStore: mist.tenancy.store's TenantStore and AuditStore in memory (same contract
tests as the SQL store)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from mist.errors import Conflict
from mist.tenancy.model import ApiKey, AuditEntry, Tenant, TenantLimits
from mist.tenancy.service import Tenancy


class MemoryTenantStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tenants: dict[str, Tenant] = {}
        self._keys: dict[str, ApiKey] = {}
        self._audit: list[AuditEntry] = []
        self._ids = itertools.count(1)

    def add_tenant(self, tenant: Tenant) -> None:
        with self._lock:
            if tenant.name in self._tenants:
                raise Conflict(f"tenant {tenant.name!r} exists already")
            self._tenants[tenant.name] = tenant

    def get_tenant(self, name: str) -> Tenant | None:
        return self._tenants.get(name)

    def list_tenants(self) -> list[Tenant]:
        return sorted(self._tenants.values(), key=lambda t: t.name)

    def set_limits(self, name: str, limits: TenantLimits) -> bool:
        with self._lock:
            if name not in self._tenants:
                return False
            self._tenants[name] = replace(self._tenants[name], limits=limits)
            return True

    def delete_tenant(self, name: str) -> bool:
        with self._lock:
            return self._tenants.pop(name, None) is not None

    def add_key(self, key: ApiKey) -> None:
        with self._lock:
            self._keys[key.key_id] = key

    def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        keys = [k for k in self._keys.values() if tenant is None or k.tenant == tenant]
        return sorted(keys, key=lambda k: (k.created_at, k.key_id))

    def revoke_key(self, key_id: str, now: float) -> bool:
        with self._lock:
            key = self._keys.get(key_id)
            if key is None or key.revoked_at is not None:
                return False
            self._keys[key_id] = replace(key, revoked_at=now)
            return True

    def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        with self._lock:
            self._audit.extend(replace(e, id=next(self._ids)) for e in entries)

    def list_audit(self, *, tenant: str | None, since: float | None, until: float | None,
                   limit: int) -> list[AuditEntry]:
        found = [
            e for e in self._audit
            if (tenant is None or e.tenant == tenant) and (since is None or e.ts >= since)
            and (until is None or e.ts < until)
        ]  # fmt: skip
        found.sort(key=lambda e: (e.ts, e.id or 0), reverse=True)
        return found[:limit]


def bootstrapped(data_dir: Path) -> tuple[Tenancy, str]:
    """A Tenancy over a MemoryTenantStore with the default tenant and an admin key (returned), for
    apps built in tests. Made on a loop of its own; it is not refreshed (nothing else writes)."""
    tenancy = Tenancy(MemoryTenantStore())

    async def setup() -> str | None:
        await tenancy.refresh()
        return await tenancy.bootstrap(data_dir)

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # works inside a running loop too
        key = pool.submit(asyncio.run, setup()).result()
    assert key is not None
    return tenancy, key
