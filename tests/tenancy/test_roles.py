"""Who may do what: roles x actions, tenant scoping, and the names a caller resolves (pure)."""

import pytest

from mist.errors import Forbidden, InvalidRequest
from mist.tenancy.roles import (
    ROLE_ACTIONS,
    Action,
    Caller,
    Principal,
    Role,
    allows,
    authorize,
)

A = Action


@pytest.mark.parametrize(
    ("role", "allowed", "refused"),
    [
        (Role.VIEWER, [A.FUNCTIONS_READ, A.INVOCATIONS_READ, A.TRIGGERS_READ, A.USAGE_READ, A.SELF_READ],
         [A.FUNCTIONS_WRITE, A.FUNCTIONS_INVOKE, A.SECRETS_WRITE, A.KEYS_MANAGE, A.QUEUES_WRITE]),
        (Role.INVOKER, [A.FUNCTIONS_INVOKE, A.SELF_READ],
         [A.FUNCTIONS_READ, A.INVOCATIONS_READ, A.FUNCTIONS_WRITE, A.KEYS_MANAGE]),
        (Role.DEVELOPER, [A.FUNCTIONS_WRITE, A.FUNCTIONS_INVOKE, A.INVOCATIONS_READ, A.TRIGGERS_WRITE,
                          A.SECRETS_WRITE, A.QUEUES_WRITE],
         [A.KEYS_MANAGE, A.AUDIT_READ, A.TENANTS_MANAGE, A.TENANT_LIMITS, A.STATISTICS_READ]),
        (Role.TENANT_ADMIN, [A.KEYS_MANAGE, A.AUDIT_READ, A.FUNCTIONS_WRITE],
         [A.TENANTS_MANAGE, A.TENANT_LIMITS, A.STATISTICS_READ]),
        (Role.ADMIN, list(Action), []),
    ],
)
def test_each_role_allows_exactly_its_actions(role, allowed, refused):
    assert all(allows(role, a) for a in allowed)
    assert not any(allows(role, a) for a in refused)


def test_roles_nest_viewer_below_developer_below_tenant_admin_below_admin():
    order = [Role.VIEWER, Role.DEVELOPER, Role.TENANT_ADMIN, Role.ADMIN]
    for lower, higher in zip(order, order[1:]):
        assert ROLE_ACTIONS[lower] < ROLE_ACTIONS[higher]


def test_a_caller_acts_in_its_own_tenant_and_names_resolve_there():
    dev = Principal("k1", "acme", Role.DEVELOPER)
    caller = authorize(dev, A.FUNCTIONS_WRITE, None)
    assert caller.tenant == "acme"
    assert caller.fid("hello") == "acme/hello"
    assert authorize(Principal("k0", "default", Role.DEVELOPER), A.FUNCTIONS_READ, None).fid("hello") == "hello"


def test_only_admins_act_in_another_tenant_and_the_refusal_does_not_depend_on_the_name():
    admin = Principal("k0", "default", Role.ADMIN)
    assert authorize(admin, A.FUNCTIONS_READ, "acme").fid("x") == "acme/x"
    dev = Principal("k1", "acme", Role.TENANT_ADMIN)
    assert authorize(dev, A.FUNCTIONS_READ, "acme").tenant == "acme"  # naming its own is fine
    messages = set()
    for other in ("globex", "no-such-tenant"):
        with pytest.raises(Forbidden) as exc:
            authorize(dev, A.FUNCTIONS_READ, other)
        messages.add(exc.value.message)
    assert len(messages) == 1 and "only admin keys" in messages.pop()


def test_a_refused_action_names_the_role_and_the_action():
    with pytest.raises(Forbidden) as exc:
        authorize(Principal("k", "acme", Role.VIEWER), A.FUNCTIONS_INVOKE, None)
    assert "viewer" in exc.value.message and "functions:invoke" in exc.value.message


@pytest.mark.parametrize("bad", ["Hello", "-x", "a/b", "a.b", "", "x" * 64])
def test_bad_names_are_refused_with_the_rule(bad):
    with pytest.raises(InvalidRequest) as exc:
        Caller(None, "acme").fid(bad)
    assert "lowercase letters" in exc.value.message


def test_role_parse_lists_the_roles():
    assert Role.parse("tenant-admin") is Role.TENANT_ADMIN
    with pytest.raises(InvalidRequest) as exc:
        Role.parse("root")
    assert "admin, tenant-admin, developer, invoker, viewer" in exc.value.message
