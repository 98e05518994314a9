"""What a secret is, and the one validation of a change to a function's secrets (pure).

A secret is an environment variable of a function whose value mist keeps sealed: its name
follows the `env` rules (mist.models.env_name: no AWS_, LAMBDA_ or MIST_ prefix). A change is a
JSON merge patch (RFC 7396) of names to values: a string sets, null removes.

    >>> parse_patch({"DB_PASSWORD": "s3cr3t", "OLD": None}, {"OLD"})
    ({'DB_PASSWORD': 's3cr3t'}, ('OLD',))

No message here ever quotes a value: only names and sizes.
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from typing import Any

from mist.errors import InvalidRequest, NotFound
from mist.models import env_name, epoch, iso

NAME_MAX = 128
VALUE_MAX = 32 * 1024  # a PEM private key is ~3 KB; Lambda allows 4 KB of environment in all
PER_FUNCTION_MAX = 100


@dataclass(frozen=True)
class StoredSecret:
    """One row of the secret store: the value sealed (mist/sealing.py)."""

    function: str  # the function's id (mist.models.qualify)
    name: str
    sealed: str
    updated_at: float


@dataclass(frozen=True)
class SecretInfo:
    """What the API shows of a secret: never its value."""

    name: str
    updated_at: float
    readable: bool = True  # False: it does not open with this server's secrets key

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "updated_at": iso(epoch(self.updated_at)), "readable": self.readable}


def parse_patch(patch: Any, existing: Set[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """(names to set -> values, names to remove) of a merge patch on a function whose secrets
    are `existing`. InvalidRequest when a name or value breaks a rule, NotFound when a name to
    remove is not there, InvalidRequest when the function would have too many."""
    if not isinstance(patch, dict) or not patch:
        raise InvalidRequest(
            'send the secrets as a JSON object of names to values, e.g. {"DB_PASSWORD": "..."}; null removes one'
        )
    sets: dict[str, str] = {}
    removes: list[str] = []
    for name, value in patch.items():
        env_name(name, "secret")
        if len(name) > NAME_MAX:
            raise InvalidRequest(f"secret name {name[:20]!r}... is {len(name)} characters; at most {NAME_MAX}")
        if value is None:
            if name not in existing:
                raise NotFound(f"the function has no secret {name!r}; `mist secret ls FUNCTION` lists them")
            removes.append(name)
            continue
        if not isinstance(value, str):
            raise InvalidRequest(f"the value of secret {name} must be a string (or null to remove it), "
                                 f"got a JSON {_json_type(value)}")
        if "\x00" in value:
            raise InvalidRequest(f"the value of secret {name} contains a NUL byte, which no environment "
                                 "variable can hold")
        try:
            size = len(value.encode())
        except UnicodeEncodeError:
            raise InvalidRequest(f"the value of secret {name} is not valid Unicode text (it holds a lone surrogate, "
                                 "e.g. \\ud800 in JSON)") from None
        if size > VALUE_MAX:
            raise InvalidRequest(f"the value of secret {name} is {size:,} bytes; at most {VALUE_MAX:,} "
                                 "(keep large material in object storage and a key to it here)")
        sets[name] = value
    count = len((set(existing) | set(sets)) - set(removes))
    if count > PER_FUNCTION_MAX:
        raise InvalidRequest(f"a function has at most {PER_FUNCTION_MAX} secrets; this would make {count}")
    return sets, tuple(removes)


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "array" if isinstance(value, list) else "object"
