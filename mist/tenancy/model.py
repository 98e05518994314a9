"""Tenants, API keys and audit entries as values, and the API key format (pure).

An API key looks like `mist_3f2a9c01b4d7_<43 url-safe characters>`: `mist_`, a 12-hex-digit key
id (public: it is listed, logged and audited), `_`, then 32 random bytes. mist stores only the
SHA-256 of the whole key; keys are random, so a fast hash is as good as a slow one here.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass, field, replace
from typing import Any

from mist.errors import InvalidRequest
from mist.models import epoch, iso
from mist.tenancy.roles import Role

KEY_PREFIX = "mist_"
_ID_LEN = 12


def new_key() -> tuple[str, str]:
    """(key id, the whole key)."""
    key_id = secrets.token_hex(_ID_LEN // 2)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


def key_id_of(key: str) -> str | None:
    """The key id inside a presented key, or None if it does not look like a mist key."""
    if len(key) < len(KEY_PREFIX) + _ID_LEN + 2 or not key.startswith(KEY_PREFIX):
        return None
    key_id = key[len(KEY_PREFIX) : len(KEY_PREFIX) + _ID_LEN]
    if key[len(KEY_PREFIX) + _ID_LEN] != "_" or any(c not in "0123456789abcdef" for c in key_id):
        return None
    return key_id


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def same_digest(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class TenantLimits:
    """A tenant's quotas (None: no limit of that kind). `weight` is its share when requests
    wait for capacity and when its sandboxes compete for CPU (fair queuing, docs/tenancy.md)."""

    rate_per_s: float | None = None  # requests per second, token bucket refill
    burst: int | None = None  # token bucket size (default: max(1, rate))
    max_concurrency: int | None = None  # executions at once, all functions of the tenant
    max_queued: int | None = None  # requests waiting for capacity at once
    weight: int = 1

    KEYS = ("rate_per_s", "burst", "max_concurrency", "max_queued", "weight")

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.KEYS}

    @classmethod
    def from_json(cls, data: object, base: TenantLimits | None = None) -> TenantLimits:
        """Changes from a JSON object over `base`; null clears a limit. Messages name key and value."""
        if not isinstance(data, dict):
            raise InvalidRequest(f"limits must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.KEYS))
        if unknown:
            raise InvalidRequest(f"unknown limit(s) {', '.join(unknown)}; known: {', '.join(cls.KEYS)}")
        changes: dict[str, Any] = {}
        if "rate_per_s" in data:
            changes["rate_per_s"] = _positive_number("rate_per_s", data["rate_per_s"])
        for key in ("burst", "max_concurrency", "max_queued"):
            if key in data:
                changes[key] = _count(key, data[key], 0 if key == "max_queued" else 1)
        if "weight" in data:
            weight = _count("weight", data["weight"], 1)
            if weight is None or weight > 1000:
                raise InvalidRequest(f"weight must be a whole number from 1 to 1000, got {data['weight']!r}")
            changes["weight"] = weight
        return replace(base or cls(), **changes)


def _positive_number(key: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidRequest(f"{key} must be a number above 0 (or null for no limit), got {value!r}")
    return float(value)


def _count(key: str, value: object, lo: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= 10_000_000:
        raise InvalidRequest(f"{key} must be a whole number from {lo} to 10000000 (or null for no limit), got {value!r}")
    return value


@dataclass(frozen=True)
class Tenant:
    name: str
    created_at: float
    limits: TenantLimits = field(default_factory=TenantLimits)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "created_at": iso(epoch(self.created_at)), "limits": self.limits.to_json()}


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    tenant: str
    role: Role
    name: str
    digest: str
    created_at: float
    expires_at: float | None = None
    revoked_at: float | None = None

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at is not None and now >= self.expires_at else "active"

    def to_json(self, now: float) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "tenant": self.tenant,
            "role": self.role.value,
            "name": self.name,
            "state": self.state(now),
            "created_at": iso(epoch(self.created_at)),
            "expires_at": iso(epoch(self.expires_at)) if self.expires_at is not None else None,
            "revoked_at": iso(epoch(self.revoked_at)) if self.revoked_at is not None else None,
        }


@dataclass(frozen=True)
class AuditEntry:
    """One audited request: who (key id or "anonymous"), what (method and path, or the event),
    in which tenant, from where, with what outcome (the HTTP status)."""

    ts: float
    tenant: str
    actor: str
    role: str
    action: str
    resource: str
    status: int
    source_ip: str
    detail: str = ""
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ts": iso(epoch(self.ts)),
            "tenant": self.tenant,
            "actor": self.actor,
            "role": self.role,
            "action": self.action,
            "resource": self.resource,
            "status": self.status,
            "source_ip": self.source_ip,
            "detail": self.detail,
        }
