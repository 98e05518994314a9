"""Where tenants, API keys and the audit log live: a Protocol, its SQL implementation
(the control database: SQLite, or PostgreSQL in cluster mode), and the in-memory fake is
`mist.testing.tenancy.MemoryTenantStore`. Both pass tests/tenancy/test_store_contract.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from mist.control.sqlschema import api_keys, audit_log, tenants
from mist.errors import Conflict
from mist.tenancy.model import ApiKey, AuditEntry, Tenant, TenantLimits
from mist.tenancy.roles import Role


class TenantStore(Protocol):
    def add_tenant(self, tenant: Tenant) -> None:
        """Conflict if a tenant of that name exists."""

    def get_tenant(self, name: str) -> Tenant | None: ...

    def list_tenants(self) -> list[Tenant]: ...

    def set_limits(self, name: str, limits: TenantLimits) -> bool:
        """False if there is no such tenant."""

    def delete_tenant(self, name: str) -> bool:
        """Forget the tenant and revoke nothing else (the caller checked it is empty)."""

    def add_key(self, key: ApiKey) -> None: ...

    def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        """Every key (of `tenant`), oldest first, revoked ones included."""

    def revoke_key(self, key_id: str, now: float) -> bool:
        """False if there is no such key or it was revoked already."""


class AuditStore(Protocol):
    def add_audit(self, entries: Sequence[AuditEntry]) -> None: ...

    def list_audit(self, *, tenant: str | None, since: float | None, until: float | None,
                   limit: int) -> list[AuditEntry]:
        """Newest first."""


def _tenant(row: sa.Row) -> Tenant:
    return Tenant(row.name, row.created_at, TenantLimits(row.rate_per_s, row.burst, row.max_concurrency,
                                                         row.max_queued, row.weight))


def _key(row: sa.Row) -> ApiKey:
    return ApiKey(row.key_id, row.tenant, Role(row.role), row.name, row.digest, row.created_at,
                  row.expires_at, row.revoked_at)


class SqlTenantStore:
    """TenantStore and AuditStore over the control database's engine (tables in sqlschema.py)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def add_tenant(self, tenant: Tenant) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(tenants.insert().values(name=tenant.name, created_at=tenant.created_at,
                                                     **tenant.limits.to_json()))
        except IntegrityError:
            raise Conflict(f"tenant {tenant.name!r} exists already") from None

    def get_tenant(self, name: str) -> Tenant | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(tenants).where(tenants.c.name == name)).first()
        return _tenant(row) if row else None

    def list_tenants(self) -> list[Tenant]:
        with self.engine.connect() as conn:
            return [_tenant(r) for r in conn.execute(sa.select(tenants).order_by(tenants.c.name))]

    def set_limits(self, name: str, limits: TenantLimits) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(tenants.update().where(tenants.c.name == name).values(**limits.to_json()))
        return done.rowcount > 0

    def delete_tenant(self, name: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(tenants.delete().where(tenants.c.name == name)).rowcount > 0

    def add_key(self, key: ApiKey) -> None:
        with self.engine.begin() as conn:
            conn.execute(api_keys.insert().values(
                key_id=key.key_id, tenant=key.tenant, role=key.role.value, name=key.name, digest=key.digest,
                created_at=key.created_at, expires_at=key.expires_at, revoked_at=key.revoked_at,
            ))  # fmt: skip

    def list_keys(self, tenant: str | None = None) -> list[ApiKey]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if tenant is not None:
            query = query.where(api_keys.c.tenant == tenant)
        with self.engine.connect() as conn:
            return [_key(r) for r in conn.execute(query)]

    def revoke_key(self, key_id: str, now: float) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(api_keys.update()
                                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                                .values(revoked_at=now))
        return done.rowcount > 0

    def add_audit(self, entries: Sequence[AuditEntry]) -> None:
        if not entries:
            return
        with self.engine.begin() as conn:
            conn.execute(audit_log.insert(), [
                {"ts": e.ts, "tenant": e.tenant, "actor": e.actor, "role": e.role, "action": e.action[:300],
                 "resource": e.resource[:1000], "status": e.status, "source_ip": e.source_ip[:64], "detail": e.detail}
                for e in entries
            ])  # fmt: skip

    def list_audit(self, *, tenant: str | None, since: float | None, until: float | None,
                   limit: int) -> list[AuditEntry]:
        t = audit_log.c
        query = sa.select(audit_log).order_by(t.ts.desc(), t.id.desc()).limit(limit)
        if tenant is not None:
            query = query.where(t.tenant == tenant)
        if since is not None:
            query = query.where(t.ts >= since)
        if until is not None:
            query = query.where(t.ts < until)
        with self.engine.connect() as conn:
            return [AuditEntry(r.ts, r.tenant, r.actor, r.role, r.action, r.resource, r.status, r.source_ip,
                               r.detail, r.id) for r in conn.execute(query)]
