"""MemorySecretStore: mist.secrets.store's SecretStore in memory (same contract tests as the SQL
store); `memory_secrets()`: a SecretService over it."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from mist.sealing import SecretBox, new_key
from mist.secrets.keys import Keyring
from mist.secrets.model import StoredSecret
from mist.secrets.service import SecretService


class MemorySecretStore:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[tuple[str, str], StoredSecret] = {}

    def change_secrets(self, function: str, sealed: Mapping[str, str], removed: Sequence[str], now: float) -> None:
        with self._lock:
            for name in removed:
                self._rows.pop((function, name), None)
            for name, value in sealed.items():
                self._rows[(function, name)] = StoredSecret(function, name, value, now)

    def list_secrets(self, function: str | None = None) -> list[StoredSecret]:
        with self._lock:
            rows = [r for (f, _), r in self._rows.items() if function is None or f == function]
        return sorted(rows, key=lambda r: (r.function, r.name))

    def delete_secrets(self, function: str) -> int:
        with self._lock:
            gone = [k for k in self._rows if k[0] == function]
            for k in gone:
                del self._rows[k]
        return len(gone)


def memory_secrets(key: bytes | None = None) -> SecretService:
    """A SecretService over a MemorySecretStore, sealing with `key` (a new random one if None);
    call `await service.start()` before use, as `mist up` does."""
    return SecretService(MemorySecretStore(), Keyring(SecretBox(key or new_key()), "a test key"))
