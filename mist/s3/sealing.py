"""Secret access keys at rest: sealed with a key file, since SigV4 needs the server to know them.

    sealed = "v1." + base64url(nonce(12) || AES-256-GCM(key file, nonce, secret, aad=access key id))

AES-GCM (from `cryptography`) both hides the secret and detects any change to the stored value;
the access key id as associated data means a sealed secret copied onto another key's row does
not open. The 32-byte key is a file only its owner can read (DATA/s3/secret.key, 0600): back it
up with the database; losing it makes every stored secret unreadable (create new keys then).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mist.errors import PlatformError

_VERSION = "v1"
_NONCE = 12


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    @classmethod
    def from_file(cls, path: Path) -> SecretBox:
        """The box keyed by `path`, creating the key file (0600) if it does not exist yet."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            key = path.read_bytes()
            if len(key) != 32:
                raise PlatformError(
                    f"the S3 key file {path} is damaged ({len(key)} bytes, expected 32); restore it from a "
                    "backup, or delete it and create new access keys (mist s3 keys create)"
                ) from None
            return cls(key)
        key = AESGCM.generate_key(bit_length=256)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return cls(key)

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_VERSION}." + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, sealed: str, context: str) -> str:
        version, _, body = sealed.partition(".")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            if version != _VERSION or len(raw) <= _NONCE:
                raise ValueError(version)
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode()).decode()
        except (ValueError, InvalidTag):
            raise PlatformError(
                f"the stored secret of S3 access key {context} does not open with this data dir's key file "
                "(s3/secret.key replaced, or the row altered); restore the key file, or delete the access key "
                "and create a new one"
            ) from None
