"""Who may do what: roles, the actions each allows, and the tenant a request acts in (pure).

Five roles, each a superset of the one below it but `invoker`:

    admin          every action, in every tenant (X-Mist-Tenant picks the tenant; default: its own)
    tenant-admin   every action in its own tenant but managing tenants and reading statistics
    developer      deploy, invoke, read logs and records, manage triggers, queues and secrets
    invoker        invoke only
    viewer         read only (functions, records, logs, triggers, queues, usage)

An action is checked against the role alone; the tenant is checked by scoping: every name in a
request is resolved inside the caller's tenant, so another tenant's function is simply not found
(404), never "forbidden" (403), and its name does not leak.

    >>> allows(Role.DEVELOPER, Action.FUNCTIONS_WRITE), allows(Role.VIEWER, Action.FUNCTIONS_INVOKE)
    (True, False)
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from mist.errors import Forbidden, InvalidRequest
from mist.models import DEFAULT_TENANT, NAME_RE, NAME_RULE, qualify


class Role(str, enum.Enum):
    ADMIN = "admin"
    TENANT_ADMIN = "tenant-admin"
    DEVELOPER = "developer"
    INVOKER = "invoker"
    VIEWER = "viewer"

    @classmethod
    def parse(cls, value: object) -> Role:
        for role in cls:
            if value == role.value:
                return role
        raise InvalidRequest(f"role must be one of {', '.join(r.value for r in cls)}, got {value!r}")


class Action(str, enum.Enum):
    SELF_READ = "self:read"  # who am I, my tenant and its limits (every role)
    FUNCTIONS_READ = "functions:read"  # list, show, versions
    FUNCTIONS_WRITE = "functions:write"  # deploy, change, delete
    FUNCTIONS_INVOKE = "functions:invoke"  # sync, async, key-protected HTTP triggers
    INVOCATIONS_READ = "invocations:read"  # records, logs, async status
    TRIGGERS_READ = "triggers:read"
    TRIGGERS_WRITE = "triggers:write"
    QUEUES_READ = "queues:read"  # list queues, dead letters
    QUEUES_WRITE = "queues:write"  # receive, delete, redrive
    SECRETS_READ = "secrets:read"  # names only: values are never returned
    SECRETS_WRITE = "secrets:write"
    USAGE_READ = "usage:read"
    KEYS_MANAGE = "keys:manage"  # API keys and S3 access keys of the tenant
    AUDIT_READ = "audit:read"
    TENANT_LIMITS = "tenant:limits"  # set a tenant's quotas (admin: it is what the operator sells)
    TENANTS_MANAGE = "tenants:manage"  # create, list, delete tenants
    STATISTICS_READ = "statistics:read"  # /v1/statistics shows every tenant's functions


_READ = {
    Action.SELF_READ, Action.FUNCTIONS_READ, Action.INVOCATIONS_READ, Action.TRIGGERS_READ, Action.QUEUES_READ,
    Action.SECRETS_READ, Action.USAGE_READ,
}  # fmt: skip
_DEVELOP = _READ | {
    Action.FUNCTIONS_WRITE, Action.FUNCTIONS_INVOKE, Action.TRIGGERS_WRITE, Action.QUEUES_WRITE,
    Action.SECRETS_WRITE,
}  # fmt: skip
ROLE_ACTIONS: dict[Role, frozenset[Action]] = {
    Role.VIEWER: frozenset(_READ),
    Role.INVOKER: frozenset({Action.SELF_READ, Action.FUNCTIONS_INVOKE}),
    Role.DEVELOPER: frozenset(_DEVELOP),
    Role.TENANT_ADMIN: frozenset(_DEVELOP | {Action.KEYS_MANAGE, Action.AUDIT_READ}),
    Role.ADMIN: frozenset(Action),
}
# roles a tenant-admin may hand out in its own tenant (never admin: that would be an escalation)
GRANTABLE: dict[Role, frozenset[Role]] = {
    Role.ADMIN: frozenset(Role),
    Role.TENANT_ADMIN: frozenset({Role.TENANT_ADMIN, Role.DEVELOPER, Role.INVOKER, Role.VIEWER}),
}


def allows(role: Role, action: Action) -> bool:
    return action in ROLE_ACTIONS[role]


@dataclass(frozen=True)
class Principal:
    """Who is calling: an API key's id, its tenant and role."""

    key_id: str
    tenant: str
    role: Role
    name: str = ""  # the key's description, for the audit log

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN


@dataclass(frozen=True)
class Caller:
    """A request's principal and the tenant it acts in; resolves names inside that tenant."""

    principal: Principal | None  # None: an anonymous caller (public HTTP triggers only)
    tenant: str

    def fid(self, name: str, what: str = "function") -> str:
        """The id of this tenant's function (or queue) `name`; InvalidRequest if `name` is bad."""
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise InvalidRequest(f"invalid {what} name {name!r}: use {NAME_RULE}")
        return qualify(self.tenant, name)

    @property
    def who(self) -> str:
        return self.principal.key_id if self.principal else "anonymous"


def check_tenant_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidRequest(f"invalid tenant name {name!r}: {NAME_RULE}")
    return name


def authorize(principal: Principal, action: Action, requested_tenant: str | None) -> Caller:
    """The Caller for `principal` doing `action`, in `requested_tenant` (the X-Mist-Tenant
    header) or its own tenant. Forbidden when the role does not allow the action, or a
    non-admin names a tenant other than its own (the same answer whether that tenant exists)."""
    tenant = principal.tenant
    if requested_tenant is not None and requested_tenant != tenant:
        if not principal.is_admin:
            raise Forbidden(
                f"this key belongs to tenant {principal.tenant!r} and can act only there; "
                "only admin keys may act in another tenant (X-Mist-Tenant / --tenant)"
            )
        tenant = check_tenant_name(requested_tenant)
    if not allows(principal.role, action):
        raise Forbidden(
            f"this key's role ({principal.role.value}) does not allow {action.value}; "
            f"ask a tenant-admin of {tenant!r} for a key with a role that does (docs/tenancy.md lists them)"
        )
    return Caller(principal, tenant)


def anonymous(tenant: str = DEFAULT_TENANT) -> Caller:
    return Caller(None, tenant)
