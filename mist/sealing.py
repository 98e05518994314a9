"""Values sealed at rest with a 256-bit key (AES-256-GCM from `cryptography`).

    sealed = "v1." + base64url(nonce(12) || AES-256-GCM(key, nonce, plaintext, aad=context))

GCM both hides the value and detects any change to the stored text; the context as associated
data (an S3 access key id; a function id and a secret's name) means a sealed value copied onto
another row does not open. Two users of it:
  - S3 access keys' secrets (mist/s3/keys.py), with DATA/s3/secret.key (docs/s3.md);
  - functions' secrets (mist/secrets/), with the secrets key (docs/secrets.md).
A key file holds the 32 bytes raw, or as text: base64 (standard or URL-safe) or 64 hex digits.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from mist.errors import PlatformError

_VERSION = "v1"
_NONCE = 12
KEY_BYTES = 32


def _broken(context: str) -> str:
    return f"the value sealed for {context} does not open with this key (another key, or the stored value altered)"


class SecretBox:
    """Seals and opens strings with one key. `broken(context)` is the message of the
    PlatformError `open` raises when a value does not open."""

    def __init__(self, key: bytes, *, broken: Callable[[str], str] = _broken) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a key is {KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self._broken = broken
        # names the key without revealing it (safe to log): which key sealed what
        self.fingerprint = hashlib.sha256(b"mist sealing key\x00" + key).hexdigest()[:16]

    @classmethod
    def from_file(cls, path: Path, *, broken: Callable[[str], str] = _broken,
                  damaged: str = "restore it from a backup") -> SecretBox:
        """The box keyed by `path`, creating the key file (32 random bytes, mode 0600) if it does
        not exist yet. `damaged`: what to do when the file holds no key (said in the error)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(read_key_file(path, damaged), broken=broken)
        key = new_key()
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return cls(key, broken=broken)

    def seal(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_VERSION}." + base64.urlsafe_b64encode(nonce + sealed).decode()

    def unseal(self, sealed: str, context: str) -> str | None:
        """The plaintext, or None if `sealed` does not open with this key for this context
        (another key sealed it, the text was altered, or it is not a sealed value at all)."""
        version, _, body = sealed.partition(".")
        try:
            raw = base64.urlsafe_b64decode(body.encode())
            if version != _VERSION or len(raw) <= _NONCE:
                return None
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode()).decode()
        except (ValueError, InvalidTag):
            return None

    def open(self, sealed: str, context: str) -> str:
        plaintext = self.unseal(sealed, context)
        if plaintext is None:
            raise PlatformError(self._broken(context))
        return plaintext


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=KEY_BYTES * 8)


def encode_key(key: bytes) -> str:
    """A key as text (URL-safe base64), for a key file or an environment variable."""
    return base64.urlsafe_b64encode(key).decode()


def parse_key(data: bytes) -> bytes | None:
    """A key from its raw 32 bytes, or from text: base64 (standard or URL-safe, with or without
    padding) or 64 hex digits, surrounding whitespace ignored. None if it is none of these."""
    if len(data) == KEY_BYTES:
        return data
    text = data.strip()
    if len(text) == 2 * KEY_BYTES:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return None
    try:
        padded = text + b"=" * (-len(text) % 4)
        key = base64.b64decode(padded.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
    except (ValueError, binascii.Error):
        return None
    return key if len(key) == KEY_BYTES else None


def read_key_file(path: Path, damaged: str = "restore it from a backup") -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PlatformError(f"cannot read the key file {path} ({exc.strerror})") from None
    key = parse_key(data)
    if key is None:
        raise PlatformError(
            f"the key file {path} is damaged or not a key ({len(data)} bytes; a key is {KEY_BYTES} bytes, or "
            f"their base64 or hex); {damaged}"
        )
    return key
