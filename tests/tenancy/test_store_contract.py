"""TenantStore / AuditStore contract: SQLite, PostgreSQL and the in-memory fake behave alike."""

import pytest

from mist.errors import Conflict
from mist.tenancy.model import ApiKey, AuditEntry, Tenant, TenantLimits
from mist.tenancy.roles import Role


def test_tenants_are_created_once_listed_by_name_limited_and_deleted(tenant_store):
    tenant_store.add_tenant(Tenant("zeta", 1.0))
    tenant_store.add_tenant(Tenant("acme", 2.0, TenantLimits(rate_per_s=5.5, burst=10, weight=2)))
    with pytest.raises(Conflict):
        tenant_store.add_tenant(Tenant("acme", 3.0))
    assert [t.name for t in tenant_store.list_tenants()] == ["acme", "zeta"]
    assert tenant_store.get_tenant("acme") == Tenant("acme", 2.0, TenantLimits(rate_per_s=5.5, burst=10, weight=2))
    assert tenant_store.set_limits("acme", TenantLimits(max_concurrency=3, max_queued=0))
    assert tenant_store.get_tenant("acme").limits == TenantLimits(max_concurrency=3, max_queued=0)
    assert not tenant_store.set_limits("nope", TenantLimits())
    assert tenant_store.delete_tenant("acme") and not tenant_store.delete_tenant("acme")
    assert tenant_store.get_tenant("acme") is None


def test_keys_are_listed_per_tenant_and_revoked_once(tenant_store):
    a = ApiKey("aaaaaaaaaaaa", "acme", Role.DEVELOPER, "ci", "d1", 1.0, expires_at=50.0)
    b = ApiKey("bbbbbbbbbbbb", "zeta", Role.VIEWER, "", "d2", 2.0)
    tenant_store.add_key(a)
    tenant_store.add_key(b)
    assert tenant_store.list_keys() == [a, b]
    assert tenant_store.list_keys("acme") == [a]
    assert tenant_store.revoke_key(a.key_id, 9.0)
    assert not tenant_store.revoke_key(a.key_id, 10.0) and not tenant_store.revoke_key("cccccccccccc", 1.0)
    assert tenant_store.list_keys("acme")[0].revoked_at == 9.0


def test_audit_entries_come_back_newest_first_per_tenant_and_window(tenant_store):
    def entry(ts, tenant):
        return AuditEntry(ts, tenant, "k", "admin", "POST /v1/x", "/v1/x", 201, "127.0.0.1")

    tenant_store.add_audit([entry(1.0, "acme"), entry(2.0, "zeta"), entry(3.0, "acme")])
    got = tenant_store.list_audit(tenant="acme", since=None, until=None, limit=10)
    assert [e.ts for e in got] == [3.0, 1.0] and all(e.id is not None for e in got)
    assert [e.ts for e in tenant_store.list_audit(tenant=None, since=2.0, until=3.0, limit=10)] == [2.0]
    assert len(tenant_store.list_audit(tenant=None, since=None, until=None, limit=2)) == 2
