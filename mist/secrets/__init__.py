"""Functions' secrets: sealed at rest, injected as environment variables, masked in logs (docs/secrets.md)."""

from mist.secrets.keys import Keyring, load_keyring
from mist.secrets.redact import Redactor
from mist.secrets.service import SecretService
from mist.secrets.store import SecretStore, SqlSecretStore

__all__ = ["Keyring", "Redactor", "SecretService", "SecretStore", "SqlSecretStore", "load_keyring"]
