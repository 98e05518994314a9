"""The secrets key: where `mist up` gets it, and the keyring that also opens what older keys sealed.

First match wins (docs/secrets.md):
  1. `mist up --secrets-key-file PATH` (or MIST_SECRETS_KEY_FILE=PATH);
  2. MIST_SECRETS_KEY=KEY, the key as base64 (`openssl rand -base64 32`); mist removes it from
     its own environment once read, so no process it starts (pip, the zygote) inherits it;
  3. DATA_DIR/secrets.key, created by the first start (mode 0600, the key as base64) — not
     with `mist up --db` (a cluster): there 1 or 2 is required, the same key on every process.
Naming a key both ways (1 and 2) is refused: which one was meant?

Rotating the key: start with the new key and the old one as `--secrets-old-key-file OLD`; the
start re-seals every secret the old key opens with the new one, and says so. Then drop the old.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mist.errors import PlatformError
from mist.sealing import SecretBox, encode_key, new_key, parse_key, read_key_file

log = logging.getLogger(__name__)

ENV_KEY = "MIST_SECRETS_KEY"
DATA_KEY_FILE = "secrets.key"


@dataclass(frozen=True)
class Keyring:
    primary: SecretBox  # seals; opens first
    source: str  # where the primary key came from, as the operator would name it (never the key)
    old: tuple[SecretBox, ...] = ()  # open only: what they sealed is sealed again with the primary

    def unseal(self, sealed: str, context: str) -> tuple[str, bool] | None:
        """(plaintext, whether an old key sealed it), or None when no key of the ring opens it."""
        plaintext = self.primary.unseal(sealed, context)
        if plaintext is not None:
            return plaintext, False
        for box in self.old:
            plaintext = box.unseal(sealed, context)
            if plaintext is not None:
                return plaintext, True
        return None


def load_keyring(data_dir: Path, *, key_file: Path | None = None, old_key_files: Sequence[Path] = (),
                 environ: MutableMapping[str, str] = os.environ, shared: bool = False) -> Keyring:
    """The keyring `mist up` seals secrets with (see the module's docstring). PlatformError when
    a key is given but unusable, naming what was given and what a key looks like. `shared`
    (`mist up --db`): every process of the cluster must open what any other sealed, so the key
    must be given (1 or 2): a key made in one process's data dir would be that process's alone."""
    from_env = environ.pop(ENV_KEY, None)
    if shared and key_file is None and from_env is None:
        raise PlatformError(
            f"with --db the secrets key is shared by every mist up of the cluster: give the same key to each, by "
            f"--secrets-key-file FILE (or MIST_SECRETS_KEY_FILE) or {ENV_KEY}; make one with "
            "`openssl rand -base64 32 > FILE` (mode 0600) and copy it to each machine")
    if key_file is not None and from_env is not None:
        raise PlatformError(f"the secrets key is given twice, by --secrets-key-file {key_file} and by {ENV_KEY}; "
                            "give one")
    if key_file is not None:
        primary, source = _from_file(key_file), f"the key file {key_file}"
    elif from_env is not None:
        key = parse_key(from_env.encode())
        if key is None:
            raise PlatformError(f"{ENV_KEY} is not a key: it must be 32 bytes as base64 (e.g. the output of "
                                "`openssl rand -base64 32`) or as 64 hex digits")
        primary, source = key, ENV_KEY
    else:
        path = data_dir / DATA_KEY_FILE
        primary, source = _data_dir_key(path), str(path)
    old = tuple(SecretBox(_from_file(p)) for p in old_key_files)
    box = SecretBox(primary)
    if any(o.fingerprint == box.fingerprint for o in old):
        raise PlatformError("--secrets-old-key-file names the current secrets key; give the key being replaced")
    return Keyring(box, source, old)


def _from_file(path: Path) -> bytes:
    key = read_key_file(path, "a secrets key file holds 32 bytes, or them as base64 or hex (`openssl rand "
                              "-base64 32 > FILE`)")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the secrets key file %s can be read by other users (mode %o); chmod 600 it", path,
                    stat.S_IMODE(mode))
    return key


def _data_dir_key(path: Path) -> bytes:
    """DATA_DIR/secrets.key, created (0600) on first use."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _from_file(path)
    key = new_key()
    try:
        os.write(fd, (encode_key(key) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return key
