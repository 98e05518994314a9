"""Tenancy: authentication from memory, key grants, revocation and expiry, the admin bootstrap."""

import os
import stat

import pytest

from mist.errors import Conflict, Forbidden, InvalidRequest, NotFound, Unauthenticated
from mist.tenancy.roles import Caller, Principal, Role
from mist.tenancy.service import Tenancy
from mist.testing.tenancy import MemoryTenantStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def tenancy():
    clock = Clock()
    t = Tenancy(MemoryTenantStore(), clock=clock)
    t.clock = clock
    await t.start()
    yield t
    await t.stop()


def as_(tenant, role):
    return Caller(Principal("x", tenant, role), tenant)


async def test_first_start_writes_a_private_admin_key_and_later_starts_keep_it(tenancy, tmp_path):
    key = await tenancy.bootstrap(tmp_path)
    path = tmp_path / "admin.key"
    assert path.read_text().strip() == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert tenancy.authenticate(key).role is Role.ADMIN and tenancy.tenant("default") is not None
    assert await tenancy.bootstrap(tmp_path) is None  # kept, not printed again
    path.write_text("mist_000000000000_garbage\n")
    new = await tenancy.bootstrap(tmp_path)  # a broken file gets a fresh key
    assert new and new != key and tenancy.authenticate(new).is_admin


async def test_unknown_tampered_revoked_and_expired_keys_are_refused(tenancy, tmp_path):
    await tenancy.bootstrap(tmp_path)
    await tenancy.create_tenant("acme")
    key, secret = await tenancy.create_key(as_("acme", Role.TENANT_ADMIN), "developer", "ci",
                                           expires_at=tenancy.clock.now + 60)
    assert tenancy.authenticate(secret) == Principal(key.key_id, "acme", Role.DEVELOPER, "ci")
    for bad in (secret[:-1] + ("A" if secret[-1] != "A" else "B"), "mist_" + "0" * 12 + "_x", "hello"):
        with pytest.raises(Unauthenticated):
            tenancy.authenticate(bad)
    tenancy.clock.now += 61
    with pytest.raises(Unauthenticated) as exc:
        tenancy.authenticate(secret)
    assert "expired" in exc.value.message
    key2, secret2 = await tenancy.create_key(as_("acme", Role.TENANT_ADMIN), "invoker")
    await tenancy.revoke_key("acme", key2.key_id)
    with pytest.raises(Unauthenticated) as exc:
        tenancy.authenticate(secret2)
    assert "revoked" in exc.value.message


async def test_tenant_admins_grant_their_role_and_below_never_admin(tenancy, tmp_path):
    await tenancy.bootstrap(tmp_path)
    await tenancy.create_tenant("acme")
    ta = as_("acme", Role.TENANT_ADMIN)
    for role in ("tenant-admin", "developer", "invoker", "viewer"):
        key, _ = await tenancy.create_key(ta, role)
        assert key.tenant == "acme" and key.role.value == role
    with pytest.raises(Forbidden):
        await tenancy.create_key(ta, "admin")
    with pytest.raises(Forbidden):
        await tenancy.create_key(as_("acme", Role.DEVELOPER), "viewer")
    with pytest.raises(InvalidRequest):
        await tenancy.create_key(as_("acme", Role.ADMIN), "admin")  # admin keys live in the default tenant
    with pytest.raises(InvalidRequest):
        await tenancy.create_key(ta, "viewer", expires_at=tenancy.clock.now - 1)


async def test_a_key_of_another_tenant_cannot_be_revoked_and_is_not_found(tenancy, tmp_path):
    await tenancy.bootstrap(tmp_path)
    for name in ("acme", "globex"):
        await tenancy.create_tenant(name)
    key, secret = await tenancy.create_key(as_("acme", Role.TENANT_ADMIN), "viewer")
    with pytest.raises(NotFound):
        await tenancy.revoke_key("globex", key.key_id)
    assert tenancy.authenticate(secret).tenant == "acme"
    assert [k.key_id for k in tenancy.list_keys("globex")] == []


async def test_tenants_are_deleted_only_when_empty_and_take_their_keys_along(tenancy, tmp_path):
    await tenancy.bootstrap(tmp_path)
    await tenancy.create_tenant("acme")
    _, secret = await tenancy.create_key(as_("acme", Role.TENANT_ADMIN), "developer")

    async def busy(_):
        return True

    async def empty(_):
        return False

    with pytest.raises(Conflict):
        await tenancy.delete_tenant("acme", busy)
    with pytest.raises(Conflict):
        await tenancy.delete_tenant("default", empty)
    await tenancy.delete_tenant("acme", empty)
    assert tenancy.tenant("acme") is None
    with pytest.raises(Unauthenticated):
        tenancy.authenticate(secret)
    with pytest.raises(Conflict):
        await tenancy.create_tenant("default")


async def test_changes_made_by_another_gateway_are_seen_after_a_refresh(tmp_path):
    store = MemoryTenantStore()
    a, b = Tenancy(store), Tenancy(store)
    await a.refresh()
    await b.refresh()
    await a.bootstrap(tmp_path)
    await a.create_tenant("acme")
    key, secret = await a.create_key(as_("acme", Role.TENANT_ADMIN), "viewer")
    with pytest.raises(Unauthenticated):
        b.authenticate(secret)  # not yet seen
    await b.refresh()
    assert b.authenticate(secret).tenant == "acme"
    await a.revoke_key("acme", key.key_id)
    await b.refresh()
    with pytest.raises(Unauthenticated):
        b.authenticate(secret)


async def test_in_a_cluster_only_the_first_start_makes_an_admin_key(tmp_path):
    store = MemoryTenantStore()
    first, second = Tenancy(store), Tenancy(store)
    await first.start()
    await second.start()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    key = await first.bootstrap(tmp_path / "a", shared=True)
    assert key and await second.bootstrap(tmp_path / "b", shared=True) is None
    assert not (tmp_path / "b" / "admin.key").exists()
    assert second.authenticate(key).is_admin  # the first one's key works on the second
    assert len([k for k in store.list_keys() if k.role is Role.ADMIN]) == 1
    await first.revoke_key(None, first.authenticate(key).key_id)
    assert await second.bootstrap(tmp_path / "b", shared=True)  # none usable left: a new one is made
    await first.stop()
    await second.stop()
