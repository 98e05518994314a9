"""`mist up --role` and `--config`: which options each role needs or refuses, and the config file
(pure: the command's values in, a message or a mapping out; tests/cli/test_up_roles.py).

| role | serves | needs | runs |
|---|---|---|---|
| all (default) | the public API; with --cluster-listen the cluster API too | nothing (--db: a cluster) | everything: today's `mist up` |
| gateway | the public API, HTTP triggers | --db, the cluster token | no shard, no sandbox: each invocation to its shard's owner |
| scheduler | the cluster API and its /healthz only | --db, --cluster-listen, the cluster token | shard leases, placement; sandboxes only with --embedded-worker |
| worker | the worker agent's API | --join, the cluster token | sandboxes (= `mist worker --join`) |
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("all", "gateway", "scheduler", "worker")

# what a worker agent has no use for: it reaches everything through the schedulers' cluster API
_NOT_FOR_WORKERS = ("db", "cluster_db", "port", "host", "s3_port", "plans", "limits_redis", "max_inflight",
                    "trigger_broker", "secrets_key_file", "secrets_old_key_file", "event_lease",
                    "shard_lease_ttl", "shard_balance", "embedded_worker", "keepalive", "keepalive_policy",
                    "usage_fsync", "worker_timeout")


# what a gateway has no use for: it serves no cluster API, holds no shard and watches no worker
_NOT_FOR_GATEWAYS = ("cluster_listen", "cluster_advertise", "cluster_db", "shard_balance", "worker_timeout")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class RoleInputs:
    role: str
    db: str | None = None
    cluster_listen: str | None = None
    cluster_token: str | None = None
    join: str | None = None
    embedded_worker: bool | None = None  # None: not given
    given: Collection[str] = ()  # options set on the command line or in the config file (not by env or default)


def problem(i: RoleInputs) -> str | None:
    """What is wrong with this combination, saying what to do; None when it makes sense."""
    if i.role not in ROLES:
        return f"--role must be one of {', '.join(ROLES)}, got {i.role!r}"
    token = "a cluster token: pass --cluster-token or set MIST_CLUSTER_TOKEN (the same on every process)"
    if i.join and i.role != "worker":
        return (f"--join is for --role worker (a worker agent joining schedulers); --role {i.role} is joined by "
                "workers, it joins nothing: drop --join")
    if i.role == "worker":
        if not i.join:
            return ("--role worker needs --join URL[,URL]: the schedulers' cluster APIs (their --cluster-listen), "
                    "e.g. --join http://10.0.0.1:7070,http://10.0.0.4:7070")
        if not i.cluster_token:
            return f"--role worker needs {token}"
        extra = [flag(n) for n in _NOT_FOR_WORKERS if n in i.given]
        if extra:
            return (f"--role worker does not use {', '.join(extra)}: a worker runs sandboxes and reaches the state "
                    "through the schedulers' cluster API (--join); give those options to the gateways and "
                    "schedulers")
        return None
    if i.role == "all":
        return None
    cluster = ("the cluster's state and shard map live in PostgreSQL: pass --db postgresql+psycopg://USER@HOST/DB "
               "(the same on every process); for one machine use --role all")
    if not i.db:
        return f"--role {i.role} needs --db: {cluster}"
    if not i.cluster_token:
        return f"--role {i.role} needs {token}"
    if i.role == "gateway":
        extra = [flag(n) for n in _NOT_FOR_GATEWAYS if n in i.given]
        if extra:
            return (f"--role gateway does not use {', '.join(extra)}: it serves no cluster API (it holds no shards "
                    "and workers do not join it); give those to a --role scheduler")
        if i.embedded_worker:
            return ("--role gateway runs no sandboxes: drop --embedded-worker, or start a --role worker "
                    "(or --role all) on this machine")
        return None
    if not i.cluster_listen:  # scheduler
        return ("--role scheduler needs --cluster-listen HOST:PORT: gateways forward invocations and workers "
                "join there (e.g. --cluster-listen 10.0.0.1:7070)")
    return None


def config_defaults(path: Path, options: Collection[str]) -> dict[str, Any]:
    """A TOML file whose keys are the command's long option names (`cluster-listen = "..."`), as
    click's default_map (parameter names). Raises ValueError naming the file and the key."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from None
    return defaults_from(data, options, str(path))


def defaults_from(data: Mapping[str, Any], options: Collection[str], where: str) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        name = key.replace("-", "_")
        if name not in options or name == "config":
            known = ", ".join(sorted(n.replace("_", "-") for n in options if n != "config"))
            raise ValueError(f"unknown key {key!r} in {where}: its keys are mist up's long option names "
                             f"without the dashes' prefix ({known})")
        if isinstance(value, dict):
            raise ValueError(f"{key!r} in {where} is a table; give it a value, e.g. {key} = \"...\"")
        out[name] = value
    return out
