"""The records mist keeps: FunctionConfig, FunctionVersion, InvocationRecord, LogRecord.

Validation lives here (one place); messages name the key, the value and the rule.
"""

from __future__ import annotations

import functools

import ipaddress
import math
import re
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from mist.errors import InvalidRequest

# function and queue names
NAME_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
NAME_RULE = (
    "1 to 63 characters: lowercase letters, digits and '-', starting with a letter or a digit "
    "(e.g. hello or resize-image)"
)

MEMORY_MIN_MB = 64
MEMORY_MAX_MB = 10240
TIMEOUT_MAX_S = 900.0
CONCURRENCY_MAX = 1000
INSTANCES_MAX = 10_000
RETRIES_MAX = 10  # asynchronous invocations: retries after a function error
EVENT_AGE_MIN_S = 60
EVENT_AGE_MAX_S = 21_600  # 6 h, Lambda's maximum event age
DESTINATION_KINDS = ("function", "queue")
HTTP_AUTH_MODES = ("public", "key")
CONCURRENCY_LIMIT_MAX = 1_000_000
DEFAULT_HANDLER = "main.handler"
DEFAULT_TENANT = "default"
ENV_RESERVED_PREFIXES = ("AWS_", "LAMBDA_", "MIST_")
EGRESS_MAX_RULES = 64
EGRESS_RULE = (
    "HOST[:PORT] or CIDR[:PORT], PORT a number or a range LOW-HIGH from 1 to 65535 "
    "(e.g. api.example.com:443, 203.0.113.0/24, 198.51.100.7:5432, pypi.org:80-443)"
)
HOST_RE = re.compile(r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+")


def qualify(tenant: str, name: str) -> str:
    """A function's (or queue's) id inside mist: `name` in the default tenant, `tenant/name` in
    any other (as Kubernetes keys namespaced objects). Stores, the worker and the event queue
    know functions only by this id; tenancy is resolved at the edge (mist/gateway/auth.py).

        >>> qualify("default", "hello"), qualify("acme", "hello")
        ('hello', 'acme/hello')
    """
    return name if tenant == DEFAULT_TENANT else f"{tenant}/{name}"


def split_id(fid: str) -> tuple[str, str]:
    """(tenant, name) of an id made by `qualify`."""
    tenant, sep, name = fid.partition("/")
    return (tenant, name) if sep else (DEFAULT_TENANT, fid)


@dataclass(frozen=True)
class FunctionConfig:
    """The user-settable configuration of a function. Defaults are the documented ones."""

    handler: str | None = None  # None: detect (main.handler, or the only module defining handler)
    memory_mb: int = 128
    timeout_s: float = 30.0
    concurrency: int = 1
    env: dict[str, str] = field(default_factory=dict)
    min_instances: int = 0  # kept warm at all times (provisioned)
    max_instances: int | None = None  # None: no limit but the machine's
    # asynchronous invocations (docs/events.md)
    retries: int = 2  # retries after a function error (0-10)
    max_event_age_s: int = EVENT_AGE_MAX_S  # an event older than this is not run (again)
    on_success: str | None = None  # "function:NAME" | "queue:NAME"
    on_failure: str | None = None  # None: the function's own dead-letter queue
    http_auth: str = "public"  # the HTTP trigger /fn/NAME: "public", or "key" (an API key of the tenant)

    # network policy (docs/network.md): () = "none" (no network at all), else the egress
    # allowlist, canonical rules as `egress_rule` returns them
    network: tuple[str, ...] = ()
    # flow control (docs/tenancy.md): None = no limit of that kind
    reserved_concurrency: int | None = None  # runs at most this many at once, set aside from the tenant's
    rate_per_s: float | None = None  # requests per second (token bucket), with `burst`
    burst: int | None = None
    max_queued: int | None = None  # requests waiting to run at once

    KEYS = (
        "handler", "memory_mb", "timeout_s", "concurrency", "env", "min_instances", "max_instances",
        "retries", "max_event_age_s", "on_success", "on_failure", "http_auth", "network",
        "reserved_concurrency", "rate_per_s", "burst", "max_queued",
    )  # fmt: skip

    @classmethod
    def from_json(cls, data: Any, base: "FunctionConfig | None" = None) -> "FunctionConfig":
        """Build from a JSON object, starting from `base` (defaults if None), validating each key."""
        if not isinstance(data, dict):
            raise InvalidRequest(f"config must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(cls.KEYS))
        if unknown:
            raise InvalidRequest(
                f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(cls.KEYS)}"
            )
        cfg = base or cls()
        changes: dict[str, Any] = {}
        if "handler" in data and data["handler"] is not None:
            changes["handler"] = _handler(data["handler"])
        if "memory_mb" in data:
            changes["memory_mb"] = _int_in("memory_mb", data["memory_mb"], MEMORY_MIN_MB, MEMORY_MAX_MB)
        if "timeout_s" in data:
            changes["timeout_s"] = _timeout(data["timeout_s"])
        if "concurrency" in data:
            changes["concurrency"] = _int_in("concurrency", data["concurrency"], 1, CONCURRENCY_MAX)
        if "env" in data:
            changes["env"] = _env(data["env"])
        if "min_instances" in data:
            changes["min_instances"] = _int_in("min_instances", data["min_instances"], 0, INSTANCES_MAX)
        if "max_instances" in data:
            raw = data["max_instances"]
            changes["max_instances"] = None if raw is None else _int_in("max_instances", raw, 1, INSTANCES_MAX)
        if "retries" in data:
            changes["retries"] = _int_in("retries", data["retries"], 0, RETRIES_MAX)
        if "max_event_age_s" in data:
            changes["max_event_age_s"] = _int_in("max_event_age_s", data["max_event_age_s"], EVENT_AGE_MIN_S, EVENT_AGE_MAX_S)
        for key, lo in (("reserved_concurrency", 0), ("burst", 1), ("max_queued", 0)):
            if key in data:
                changes[key] = None if data[key] is None else _int_in(key, data[key], lo, CONCURRENCY_LIMIT_MAX)
        if "rate_per_s" in data:
            changes["rate_per_s"] = None if data["rate_per_s"] is None else _rate(data["rate_per_s"])
        if "http_auth" in data:
            if data["http_auth"] not in HTTP_AUTH_MODES:
                raise InvalidRequest(f"http_auth must be public or key, got {data['http_auth']!r}")
            changes["http_auth"] = data["http_auth"]
        for key in ("on_success", "on_failure"):
            if key in data:
                changes[key] = None if data[key] is None else destination(key, data[key])
        if "network" in data:
            changes["network"] = network_policy(data["network"])
        out = replace(cfg, **changes)
        if out.max_instances is not None and out.min_instances > out.max_instances:
            raise InvalidRequest(
                f"min_instances ({out.min_instances}) cannot be more than max_instances ({out.max_instances})"
            )
        return out


def _int_in(key: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{key} must be a whole number from {lo} to {hi}, got {value!r}")
    if not lo <= value <= hi:
        raise InvalidRequest(f"{key} must be from {lo} to {hi}, got {value}")
    return value


def destination(key: str, value: Any) -> str:
    """A destination of asynchronous invocations: "function:NAME" or "queue:NAME"."""
    kind, _, name = value.partition(":") if isinstance(value, str) else ("", "", "")
    if kind not in DESTINATION_KINDS or not NAME_RE.fullmatch(name):
        raise InvalidRequest(
            f"{key} must be function:NAME or queue:NAME (NAME: {NAME_RULE}), got {value!r}"
        )
    return value


def network_policy(value: Any) -> tuple[str, ...]:
    """The `network` key: "none" (or null) -> (); {"egress": [RULE, ...]} -> the canonical rules,
    sorted and without repeats."""
    if value is None or value == "none":
        return ()
    if not isinstance(value, dict) or set(value) != {"egress"} or not isinstance(value["egress"], list):
        raise InvalidRequest(
            f'network must be "none" or {{"egress": [RULE, ...]}} with RULE {EGRESS_RULE}, got {value!r}'
        )
    rules = value["egress"]
    if not rules:
        raise InvalidRequest('network: the egress list is empty; use "none" for a function without network')
    if len(rules) > EGRESS_MAX_RULES:
        raise InvalidRequest(f"network: at most {EGRESS_MAX_RULES} egress rules, got {len(rules)}")
    return tuple(sorted({egress_rule(rule) for rule in rules}))


def egress_rule(value: Any) -> str:
    """One egress rule, canonical: "host[:port]" (lowercase), "a.b.c.d/n[:port]" (the network
    address; a bare address is a /32), the port "N" or "LOW-HIGH" (omitted: every port)."""
    if not isinstance(value, str) or not value or len(value) > 300:
        raise InvalidRequest(f"network: an egress rule must be {EGRESS_RULE}, got {value!r}")
    text = value.strip().lower()
    if text.startswith("[") or text.count(":") > 1:
        raise InvalidRequest(f"network: egress rule {value!r} is IPv6; sandboxes have IPv4 egress only")
    dest, sep, port = text.partition(":")
    ports = _ports(value, port) if sep else ""
    if re.fullmatch(r"[0-9./]+", dest):
        try:
            net = ipaddress.IPv4Network(dest, strict=False)
        except ValueError:
            raise InvalidRequest(f"network: {dest!r} in egress rule {value!r} is not an IPv4 address or CIDR "
                                 "(e.g. 203.0.113.0/24)") from None
        if net.subnet_of(_LOOPBACK):
            raise InvalidRequest(
                f"network: egress rule {value!r} names the loopback network: inside a sandbox 127.0.0.1 is "
                "the sandbox itself, and the host's loopback services are never reachable from a function"
            )
        dest = str(net)
    elif not HOST_RE.fullmatch(dest) or dest.endswith((".localhost", ".local")) or dest.rsplit(".", 1)[1].isdigit():
        raise InvalidRequest(f"network: {dest!r} in egress rule {value!r} is not a host name like "
                             f"api.example.com nor an IPv4 CIDR; a rule is {EGRESS_RULE}")
    return f"{dest}:{ports}" if ports else dest


_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")


def _ports(rule: str, text: str) -> str:
    lo, dash, hi = text.partition("-")
    if not lo.isdigit() or (dash and not hi.isdigit()):
        raise InvalidRequest(f"network: the port of egress rule {rule!r} must be a number or LOW-HIGH, got {text!r}")
    low, high = int(lo), int(hi) if dash else int(lo)
    if not 1 <= low <= high <= 65535:
        raise InvalidRequest(f"network: the port of egress rule {rule!r} must be from 1 to 65535 "
                             f"(a range LOW-HIGH with LOW <= HIGH), got {text!r}")
    if (low, high) == (1, 65535):
        return ""
    return str(low) if low == high else f"{low}-{high}"


def network_json(rules: tuple[str, ...]) -> object:
    """The `network` key as the API shows it: "none" or {"egress": [...]}."""
    return {"egress": list(rules)} if rules else "none"


def _rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise InvalidRequest(f"rate_per_s must be a number of requests per second above 0 (or null), got {value!r}")
    return float(value)


def _timeout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRequest(f"timeout_s must be a number of seconds, got {value!r}")
    if not 0 < value <= TIMEOUT_MAX_S:
        raise InvalidRequest(f"timeout_s must be more than 0 and at most {TIMEOUT_MAX_S:g} seconds, got {value}")
    return float(value)


def _handler(value: Any) -> str:
    if not isinstance(value, str) or "." not in value or value.startswith(".") or value.endswith("."):
        raise InvalidRequest(f"handler must look like module.function (e.g. main.handler), got {value!r}")
    if not all(part.isidentifier() for part in value.split(".")):
        raise InvalidRequest(f"handler {value!r} is not a dotted Python name like main.handler")
    return value


def env_name(name: Any, what: str = "env") -> str:
    """An environment variable's name as a function may set it (in `env`, or as a secret):
    letters, digits and _, not starting with a digit, not one of mist's reserved prefixes."""
    if not isinstance(name, str) or not name or not (name[0].isalpha() or name[0] == "_") or not all(
        c.isalnum() or c == "_" for c in name
    ):
        raise InvalidRequest(f"{what} name {name!r} is not valid: use letters, digits and _, not starting with a digit")
    if name.upper().startswith(ENV_RESERVED_PREFIXES):
        raise InvalidRequest(
            f"{what} name {name!r} is reserved (names starting with {', '.join(ENV_RESERVED_PREFIXES)} are set by mist)"
        )
    return name


def _env(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"env must be an object of names to strings, got {type(value).__name__}")
    out: dict[str, str] = {}
    for k, v in value.items():
        env_name(k)
        if not isinstance(v, str):
            raise InvalidRequest(f"env value of {k} must be a string, got {v!r}")
        if "\x00" in v:
            raise InvalidRequest(f"env value of {k} contains a NUL byte")
        out[k] = v
    return out


@dataclass(frozen=True)
class FunctionVersion:
    """One immutable version of a function: its code and its configuration. `name` is the
    function's id (`qualify(tenant, name)`); `tenant` and `local_name` are its parts."""

    name: str
    version: int
    handler: str
    memory_mb: int
    timeout_s: float
    concurrency: int
    env: dict[str, str]
    code_sha256: str
    code_size: int
    layer_sha256: str | None
    created_at: datetime
    min_instances: int = 0
    max_instances: int | None = None
    retries: int = 2
    max_event_age_s: int = EVENT_AGE_MAX_S
    on_success: str | None = None
    on_failure: str | None = None
    http_auth: str = "public"
    network: tuple[str, ...] = ()  # () = none; else the egress allowlist (FunctionConfig.network)
    reserved_concurrency: int | None = None  # runs at most this many at once, set aside from the tenant's
    rate_per_s: float | None = None  # requests per second (token bucket), with `burst`
    burst: int | None = None
    max_queued: int | None = None  # requests waiting to run at once

    @functools.cached_property
    def tenant(self) -> str:  # asked several times per invocation
        return split_id(self.name)[0]

    @property
    def local_name(self) -> str:
        return split_id(self.name)[1]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.local_name,
            "tenant": self.tenant,
            "version": self.version,
            "handler": self.handler,
            "memory_mb": self.memory_mb,
            "timeout_s": self.timeout_s,
            "concurrency": self.concurrency,
            "env": dict(self.env),
            "min_instances": self.min_instances,
            "max_instances": self.max_instances,
            "retries": self.retries,
            "max_event_age_s": self.max_event_age_s,
            "on_success": self.on_success,
            "on_failure": self.on_failure,
            "http_auth": self.http_auth,
            "reserved_concurrency": self.reserved_concurrency,
            "rate_per_s": self.rate_per_s,
            "burst": self.burst,
            "max_queued": self.max_queued,
            "network": network_json(self.network),
            "code_sha256": self.code_sha256,
            "code_size": self.code_size,
            "layer_sha256": self.layer_sha256,
            "created_at": iso(self.created_at),
        }

    def config(self) -> FunctionConfig:
        return FunctionConfig(
            self.handler, self.memory_mb, self.timeout_s, self.concurrency, dict(self.env),
            self.min_instances, self.max_instances, self.retries, self.max_event_age_s,
            self.on_success, self.on_failure, self.http_auth, self.network,
            self.reserved_concurrency, self.rate_per_s, self.burst, self.max_queued,
        )  # fmt: skip


@dataclass(frozen=True)
class FunctionSummary:
    name: str
    created_at: datetime
    updated_at: datetime
    latest: FunctionVersion

    def to_json(self) -> dict[str, Any]:
        tenant, name = split_id(self.name)
        return {
            "name": name,
            "tenant": tenant,
            "latest_version": self.latest.version,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "latest": self.latest.to_json(),
        }


@dataclass(frozen=True)
class LogRecord:
    invocation_id: str
    function: str
    version: int
    ts: float
    stream: str
    text: str

    def to_json(self) -> dict[str, Any]:
        return {
            "ts": iso(epoch(self.ts)),
            "invocation_id": self.invocation_id,
            "version": self.version,
            "stream": self.stream,
            "text": self.text,
        }


@dataclass(frozen=True)
class InvocationRecord:
    """What mist keeps about one invocation (see docs/api.md)."""

    id: str
    function: str
    version: int
    trigger: str  # "api" | "http" | "event" (an asynchronous invocation) | another event source's name
    status: str  # "succeeded" | "failed" | "error"
    error_type: str | None
    error_message: str | None
    cold_start: bool
    init_ms: float
    duration_ms: float
    billed_ms: int
    memory_mb: int
    max_memory_used_mb: int
    started_at: float
    ended_at: float

    def to_json(self, logs: list[LogRecord] | None = None) -> dict[str, Any]:
        tenant, name = split_id(self.function)
        out: dict[str, Any] = {
            "id": self.id,
            "function": name,
            "tenant": tenant,
            "version": self.version,
            "trigger": self.trigger,
            "status": self.status,
            "error_type": self.error_type,
            "error_message": self.error_message,
            "cold_start": self.cold_start,
            "init_ms": round(self.init_ms, 3),
            "duration_ms": round(self.duration_ms, 3),
            "billed_ms": self.billed_ms,
            "memory_mb": self.memory_mb,
            "max_memory_used_mb": self.max_memory_used_mb,
            "started_at": iso(epoch(self.started_at)),
            "ended_at": iso(epoch(self.ended_at)),
        }
        if logs is not None:
            out["logs"] = [{"ts": iso(epoch(l.ts)), "stream": l.stream, "text": l.text} for l in logs]
        return out


def epoch(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def iso(dt: datetime) -> str:
    return dt.astimezone(timezone.utc).isoformat()
