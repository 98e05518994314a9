"""SecretService: functions' secrets, sealed in the store, open in memory for the worker.

    change: parse_patch -> seal each value (context "FUNCTION:NAME") -> the store, in one
            transaction -> memory, and a new revision (the caller then restarts the function's
            instances: FunctionService.change_secrets)
    invoke: environment(fid), revision(fid) and redactor(fid), from memory, O(1)
    start:  every stored secret is opened once; what an old key sealed is sealed again with the
            current key; what no key opens is reported, and the function is not run (its
            invocations fail with SecretsUnavailable, saying why) until that secret is set
            again or removed, or mist is started with the right key.

Values are never logged, never returned, and never in an error message; the API shows names,
times and whether each opens (`list`). In a cluster (`mist up --db`), each process holds its own copy;
a change made through one reaches the others through the ChangeFeed (`follow`, within ~1 s).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mist.control.batching import SerialWriter
from mist.errors import SecretsUnavailable
from mist.models import split_id
from mist.secrets.keys import Keyring
from mist.secrets.model import SecretInfo, StoredSecret, parse_patch
from mist.secrets.redact import Redactor
from mist.secrets.store import SecretStore

log = logging.getLogger(__name__)


def context(function: str, name: str) -> str:
    """What a value is sealed for: copied onto another function's or name's row, it does not open."""
    return f"{function}:{name}"


@dataclass
class _Secrets:
    """One function's secrets, in memory."""

    values: dict[str, str] = field(default_factory=dict)
    info: dict[str, SecretInfo] = field(default_factory=dict)  # every stored name, readable or not
    revision: int = 0
    redactor: Redactor | None = None

    @property
    def unreadable(self) -> list[str]:
        return sorted(n for n, i in self.info.items() if not i.readable)


@dataclass(frozen=True)
class SecretsLoaded:
    """What `start` found."""

    secrets: int
    functions: int
    resealed: int  # sealed by an old key, sealed again with the current one
    unreadable: tuple[tuple[str, str], ...]  # (function id, name) that no key opens


@dataclass(frozen=True)
class SecretStatistics:
    functions: int
    secrets: int
    unreadable: int
    changes: int


class SecretService:
    def __init__(self, store: SecretStore, keyring: Keyring, *, clock: Callable[[], float] = time.time,
                 writer: SerialWriter | None = None) -> None:
        self._store = store
        self._keyring = keyring
        self._clock = clock
        self._writer = writer
        self._functions: dict[str, _Secrets] = {}
        self._revisions = itertools.count(1)
        self._lock = asyncio.Lock()
        self._changes = 0

    @property
    def key_source(self) -> str:
        return self._keyring.source

    async def start(self) -> SecretsLoaded:
        rows = await asyncio.to_thread(self._store.list_secrets)
        reseal: dict[str, dict[str, str]] = {}
        unreadable: list[tuple[str, str]] = []
        for row in rows:
            fs = self._functions.setdefault(row.function, _Secrets())
            opened = self._keyring.unseal(row.sealed, context(row.function, row.name))
            if opened is None:
                unreadable.append((row.function, row.name))
                fs.info[row.name] = SecretInfo(row.name, row.updated_at, readable=False)
                continue
            value, by_old_key = opened
            fs.values[row.name] = value
            fs.info[row.name] = SecretInfo(row.name, row.updated_at)
            if by_old_key:
                reseal.setdefault(row.function, {})[row.name] = self._keyring.primary.seal(
                    value, context(row.function, row.name))
        for fid, sealed in reseal.items():  # the same value, sealed with the current key
            await self._write(self._store.change_secrets, fid, sealed, (), self._clock())
        for fs in self._functions.values():
            fs.redactor = Redactor(fs.values.values()) or None
        loaded = SecretsLoaded(len(rows), len(self._functions), sum(map(len, reseal.values())), tuple(unreadable))
        if loaded.resealed:
            log.warning("sealed %d secrets again with the secrets key from %s; the old key is no longer needed",
                        loaded.resealed, self._keyring.source)
        if unreadable:
            log.warning(
                "%d secrets do not open with the secrets key from %s (%s): their functions will not run until "
                "mist starts with the key that sealed them (or with it as --secrets-old-key-file), or the "
                "secrets are set again (mist secret set)", len(unreadable), self._keyring.source,
                ", ".join(f"{_local(f)} {n}" for f, n in unreadable[:10]) + (" ..." if len(unreadable) > 10 else ""))
        return loaded

    # -- the hot path: from memory -----------------------------------------------------------

    def environment(self, fid: str) -> Mapping[str, str] | None:
        """The function's secrets as environment variables (None: it has none).
        SecretsUnavailable if one of them does not open with this server's key."""
        fs = self._functions.get(fid)
        if fs is None:
            return None
        if len(fs.values) != len(fs.info):
            raise SecretsUnavailable(
                f"function {_local(fid)!r} is not run: its secret(s) {', '.join(fs.unreadable)} do not open with "
                f"the secrets key mist was started with ({self._keyring.source}); start mist with the key that "
                f"sealed them, or set them again (mist secret set {_local(fid)} NAME=VALUE)")
        return fs.values or None

    def token(self, fid: str) -> object:
        """An object replaced whenever the function's secrets change in memory (set, removed,
        opened again): a cache of what was built from them holds while it is the same."""
        return self._functions.get(fid)

    def revision(self, fid: str) -> int:
        fs = self._functions.get(fid)
        return fs.revision if fs is not None else 0

    def redactor(self, fid: str) -> Redactor | None:
        fs = self._functions.get(fid)
        return fs.redactor if fs is not None else None

    # -- the API -------------------------------------------------------------------------------

    def list(self, fid: str) -> list[SecretInfo]:
        fs = self._functions.get(fid)
        return [fs.info[n] for n in sorted(fs.info)] if fs is not None else []

    async def change(self, fid: str, patch: object) -> list[SecretInfo]:
        """Apply a merge patch (mist.secrets.model.parse_patch) to the function's secrets: set
        the names with a value, remove the names with null, in one transaction."""
        async with self._lock:
            fs = self._functions.get(fid) or _Secrets()
            sets, removes = parse_patch(patch, fs.info.keys())
            now = self._clock()
            sealed = {name: self._keyring.primary.seal(value, context(fid, name)) for name, value in sets.items()}
            await self._write(self._store.change_secrets, fid, sealed, removes, now)
            values, info = dict(fs.values), dict(fs.info)
            for name in removes:
                values.pop(name, None)
                info.pop(name, None)
            for name, value in sets.items():
                values[name] = value
                info[name] = SecretInfo(name, now)
            # a new object: an invocation holding the old values (its instance has them) keeps them
            self._functions[fid] = _Secrets(values, info, next(self._revisions), Redactor(values.values()) or None)
            self._changes += 1
            return self.list(fid)

    async def forget(self, fid: str) -> None:
        """The function was deleted: its secrets go too."""
        async with self._lock:
            await self._write(self._store.delete_secrets, fid)
            gone = self._functions.pop(fid, None)
            if gone is not None:  # the revision stays: a function made again under the name counts on
                self._functions[fid] = _Secrets(revision=gone.revision)

    async def follow(self) -> list[str]:
        """Catch up with secrets changed by other processes of a cluster (ChangeFeed topic
        "secrets"): every function whose stored secrets differ from what is held here (names or
        times) is opened again and takes a new revision. Returns those functions' ids (the
        caller restarts their instances: FunctionService.restart)."""
        async with self._lock:
            rows = await asyncio.to_thread(self._store.list_secrets)
            stored: dict[str, dict[str, StoredSecret]] = {}
            for row in rows:
                stored.setdefault(row.function, {})[row.name] = row
            changed = []
            for fid in sorted(set(stored) | {f for f, s in self._functions.items() if s.info}):
                held = self._functions.get(fid) or _Secrets()
                now = stored.get(fid, {})
                if {n: i.updated_at for n, i in held.info.items()} == {n: r.updated_at for n, r in now.items()}:
                    continue
                values, info = {}, {}
                for name, row in now.items():
                    opened = self._keyring.unseal(row.sealed, context(fid, name))
                    info[name] = SecretInfo(name, row.updated_at, readable=opened is not None)
                    if opened is not None:
                        values[name] = opened[0]
                self._functions[fid] = _Secrets(values, info, next(self._revisions), Redactor(values.values()) or None)
                changed.append(fid)
            return changed

    def statistics(self) -> SecretStatistics:
        return SecretStatistics(
            functions=len(self._functions), secrets=sum(len(f.info) for f in self._functions.values()),
            unreadable=sum(len(f.unreadable) for f in self._functions.values()), changes=self._changes)

    async def _write(self, fn: Callable, *args: object) -> object:
        if self._writer is not None:
            return await self._writer.run(fn, *args)
        return await asyncio.to_thread(fn, *args)


def _local(fid: str) -> str:
    return split_id(fid)[1]
