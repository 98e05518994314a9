"""Secret access keys at rest: sealed with a key file, since SigV4 needs the server to know them.

`cryptography` is not among mist's dependencies, so the box is built from the standard
library's HMAC-SHA256 alone, in the textbook encrypt-then-MAC shape:

    enc_key, mac_key = HMAC(master, "mist-s3 enc"), HMAC(master, "mist-s3 mac")
    keystream        = HMAC(enc_key, nonce || 0) || HMAC(enc_key, nonce || 1) || ...   (PRF in counter mode)
    sealed           = "v1." + base64url(nonce(16) || plaintext XOR keystream || HMAC(mac_key, "v1" || nonce || ciphertext))

HMAC-SHA256 is a PRF, so counter mode over it with a fresh random 128-bit nonce is a sound
stream cipher, and the MAC over nonce and ciphertext (checked in constant time before
anything is decrypted) makes tampering detectable. The master key is 32 random bytes in a file
only its owner can read (0600); losing it makes every stored secret unreadable (recreate keys).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path

from mist.errors import PlatformError

_VERSION = b"v1"
_NONCE = 16
_TAG = 32


class SecretBox:
    def __init__(self, master: bytes) -> None:
        if len(master) < 32:
            raise ValueError("the master key must be at least 32 bytes")
        self._enc = hmac.new(master, b"mist-s3 enc", hashlib.sha256).digest()
        self._mac = hmac.new(master, b"mist-s3 mac", hashlib.sha256).digest()

    @classmethod
    def from_file(cls, path: Path) -> SecretBox:
        """The box keyed by `path`, creating the key file (0600) if it does not exist yet."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            master = path.read_bytes()
            if len(master) != 32:
                raise PlatformError(
                    f"the S3 key file {path} is damaged ({len(master)} bytes, expected 32); restore it from a "
                    "backup, or delete it and create new access keys (mist s3 keys create)"
                ) from None
            return cls(master)
        master = os.urandom(32)
        try:
            os.write(fd, master)
            os.fsync(fd)
        finally:
            os.close(fd)
        return cls(master)

    def _keystream(self, nonce: bytes, length: int) -> bytes:
        blocks = (length + 31) // 32
        return b"".join(
            hmac.new(self._enc, nonce + i.to_bytes(4, "big"), hashlib.sha256).digest() for i in range(blocks)
        )[:length]

    def seal(self, plaintext: str) -> str:
        data = plaintext.encode()
        nonce = os.urandom(_NONCE)
        ciphertext = bytes(a ^ b for a, b in zip(data, self._keystream(nonce, len(data))))
        tag = hmac.new(self._mac, _VERSION + nonce + ciphertext, hashlib.sha256).digest()
        return _VERSION.decode() + "." + base64.urlsafe_b64encode(nonce + ciphertext + tag).decode()

    def open(self, sealed: str) -> str:
        version, _, body = sealed.partition(".")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
        except ValueError:
            raw = b""
        if version.encode() != _VERSION or len(raw) < _NONCE + _TAG:
            raise PlatformError("a stored S3 secret is damaged; delete the access key and create a new one")
        nonce, ciphertext, tag = raw[:_NONCE], raw[_NONCE:-_TAG], raw[-_TAG:]
        expected = hmac.new(self._mac, _VERSION + nonce + ciphertext, hashlib.sha256).digest()
        if not hmac.compare_digest(tag, expected):
            raise PlatformError(
                "a stored S3 secret does not open with this data dir's key file (s3/secret.key was replaced?); "
                "restore the key file or create new access keys"
            )
        return bytes(a ^ b for a, b in zip(ciphertext, self._keystream(nonce, len(ciphertext)))).decode()
