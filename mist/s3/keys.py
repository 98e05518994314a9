"""Access keys: an id the client sends in the clear, a secret it signs with; each has an owner.

The secret is shown once, when the key is created, and stored sealed (mist/sealing.py, with the
key file DATA/s3/secret.key: back it up with the database). Lookups are
cached for `cache_s` seconds; deleting a key through this object forgets it at once (another
process sharing the database stops accepting it within `cache_s`).
"""

from __future__ import annotations

import secrets
import string
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

from mist.errors import NotFound
from mist.s3 import db as tables
from mist.s3.db import Database
from mist.sealing import SecretBox

DEFAULT_OWNER = "default"
_ID_ALPHABET = string.ascii_uppercase + string.digits


@dataclass(frozen=True)
class AccessKey:
    access_key_id: str
    owner: str
    created_at: float
    secret_access_key: str | None = None  # only when just created

    def to_json(self) -> dict[str, object]:
        created = datetime.fromtimestamp(self.created_at, timezone.utc).isoformat()
        out: dict[str, object] = {"access_key_id": self.access_key_id, "owner": self.owner, "created_at": created}
        if self.secret_access_key is not None:
            out["secret_access_key"] = self.secret_access_key
        return out


def sealing_box(key_file: Path) -> SecretBox:
    """The box sealing access keys' secrets (the key file is created on first use, mode 0600)."""
    return SecretBox.from_file(key_file, damaged="restore it from a backup, or delete it and create new access keys "
                               "(mist s3 keys create)", broken=lambda key_id: (
        f"the stored secret of S3 access key {key_id} does not open with this data dir's key file "
        "(s3/secret.key replaced, or the row altered); restore the key file, or delete the access key "
        "and create a new one"))


class AccessKeys:
    def __init__(self, db: Database, box: SecretBox, clock: Callable[[], float], *, cache_s: float = 5.0) -> None:
        self._db = db
        self._box = box
        self._clock = clock
        self._cache_s = cache_s
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[float, tuple[str, str] | None]] = {}

    def create(self, owner: str = DEFAULT_OWNER) -> AccessKey:
        key_id = "MIST" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))
        secret = secrets.token_urlsafe(30)  # 40 characters, like AWS's
        now = self._clock()
        with self._db.write() as conn:
            conn.execute(
                tables.access_keys.insert().values(
                    access_key_id=key_id, owner=owner, secret=self._box.seal(secret, key_id), created_at=now
                )
            )
        return AccessKey(key_id, owner, now, secret)

    def list(self, owner: str | None = None) -> list[AccessKey]:
        t = tables.access_keys
        query = sa.select(t.c.access_key_id, t.c.owner, t.c.created_at).order_by(t.c.created_at, t.c.access_key_id)
        if owner is not None:
            query = query.where(t.c.owner == owner)
        with self._db.read() as conn:
            return [AccessKey(r.access_key_id, r.owner, r.created_at) for r in conn.execute(query)]

    def delete(self, access_key_id: str, owner: str | None = None) -> None:
        """Delete a key (of `owner` only, when given: another owner's key is not found)."""
        t = tables.access_keys
        where = t.c.access_key_id == access_key_id
        if owner is not None:
            where &= t.c.owner == owner
        with self._db.write() as conn:
            gone = conn.execute(t.delete().where(where)).rowcount
        with self._lock:
            self._cache.pop(access_key_id, None)
        if not gone:
            raise NotFound(f"there is no S3 access key {access_key_id!r}; `mist s3 keys ls` lists them")

    def cached(self, access_key_id: str) -> tuple[bool, tuple[str, str] | None]:
        """(fresh, found) from memory, without blocking: found is (secret, owner) or None."""
        with self._lock:
            hit = self._cache.get(access_key_id)
        if hit is None or self._clock() - hit[0] > self._cache_s:
            return False, None
        return True, hit[1]

    def lookup(self, access_key_id: str) -> tuple[str, str] | None:
        """(secret, owner) of a key, or None if there is no such key. Blocking (the database)."""
        fresh, found = self.cached(access_key_id)
        if fresh:
            return found
        t = tables.access_keys
        with self._db.read() as conn:
            row = conn.execute(sa.select(t.c.secret, t.c.owner).where(t.c.access_key_id == access_key_id)).first()
        found = (self._box.open(row.secret, access_key_id), row.owner) if row else None
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[access_key_id] = (self._clock(), found)
        return found
