"""The secrets key: sealing round trips, where `mist up` finds the key, and a wrong key failing clearly."""

import base64
import stat

import pytest

from mist.errors import PlatformError
from mist.sealing import SecretBox, encode_key, new_key, parse_key
from mist.secrets.keys import ENV_KEY, load_keyring


def test_a_value_sealed_with_a_key_opens_with_that_key_only_and_for_its_context_only():
    key = new_key()
    box = SecretBox(key)
    sealed = box.seal("correct horse battery staple", "hello:DB_PASSWORD")
    assert "horse" not in sealed and sealed != box.seal("correct horse battery staple", "hello:DB_PASSWORD")
    assert SecretBox(key).unseal(sealed, "hello:DB_PASSWORD") == "correct horse battery staple"
    assert SecretBox(new_key()).unseal(sealed, "hello:DB_PASSWORD") is None  # another key
    assert box.unseal(sealed, "acme/hello:DB_PASSWORD") is None  # copied onto another function's row
    assert box.unseal(sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB"), "hello:DB_PASSWORD") is None
    assert box.unseal("not sealed at all", "hello:DB_PASSWORD") is None
    with pytest.raises(PlatformError, match="does not open with this key"):
        SecretBox(new_key()).open(sealed, "hello:DB_PASSWORD")


def test_unicode_values_round_trip():
    box = SecretBox(new_key())
    value = "pässwörd ✓ 🔑\nsecond line"
    assert box.unseal(box.seal(value, "f:K"), "f:K") == value


@pytest.mark.parametrize("form", ["raw", "base64", "base64url", "unpadded", "hex", "newline"])
def test_a_key_is_read_raw_or_as_base64_or_hex(form):
    key = new_key()
    data = {"raw": key, "base64": base64.b64encode(key), "base64url": encode_key(key).encode(),
            "unpadded": encode_key(key).rstrip("=").encode(), "hex": key.hex().encode(),
            "newline": base64.b64encode(key) + b"\n"}[form]
    assert parse_key(data) == key


@pytest.mark.parametrize("data", [b"", b"short", b"x" * 31, base64.b64encode(b"k" * 16), b"z" * 64])
def test_what_is_not_a_key_is_refused(data):
    assert parse_key(data) is None


def test_the_first_start_makes_a_key_in_the_data_dir_readable_by_its_owner_only(tmp_path):
    ring = load_keyring(tmp_path, environ={})
    path = tmp_path / "secrets.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ring.source == str(path)
    sealed = ring.primary.seal("v", "f:K")
    assert load_keyring(tmp_path, environ={}).unseal(sealed, "f:K") == ("v", False)  # the same key next time


def test_the_key_from_the_environment_is_used_and_taken_out_of_it(tmp_path):
    key = new_key()
    environ = {ENV_KEY: base64.b64encode(key).decode(), "PATH": "/bin"}
    ring = load_keyring(tmp_path, environ=environ)
    assert ring.source == ENV_KEY and ring.primary.fingerprint == SecretBox(key).fingerprint
    assert environ == {"PATH": "/bin"}  # no process mist starts inherits it
    assert not (tmp_path / "secrets.key").exists()


def test_a_key_file_is_used_and_a_key_given_twice_is_refused(tmp_path):
    key_file = tmp_path / "k"
    key_file.write_text(encode_key(new_key()))
    key_file.chmod(0o600)
    assert load_keyring(tmp_path, key_file=key_file, environ={}).source == f"the key file {key_file}"
    with pytest.raises(PlatformError, match="given twice"):
        load_keyring(tmp_path, key_file=key_file, environ={ENV_KEY: encode_key(new_key())})


@pytest.mark.parametrize("where", ["env", "file", "missing file"])
def test_a_key_that_is_not_one_is_refused_saying_what_a_key_looks_like(tmp_path, where):
    bad = tmp_path / "bad.key"
    bad.write_text("my password")
    with pytest.raises(PlatformError) as exc:
        if where == "env":
            load_keyring(tmp_path, environ={ENV_KEY: "my password"})
        else:
            load_keyring(tmp_path, key_file=bad if where == "file" else tmp_path / "nope", environ={})
    assert ("base64" in exc.value.message or "cannot read" in exc.value.message)
    assert "my password" not in exc.value.message


def test_an_old_key_opens_what_it_sealed_and_says_so(tmp_path):
    old, new = tmp_path / "old.key", tmp_path / "new.key"
    for path in (old, new):
        path.write_text(encode_key(new_key()))
        path.chmod(0o600)
    sealed = load_keyring(tmp_path, key_file=old, environ={}).primary.seal("v", "f:K")
    ring = load_keyring(tmp_path, key_file=new, old_key_files=[old], environ={})
    assert ring.unseal(sealed, "f:K") == ("v", True)
    assert load_keyring(tmp_path, key_file=new, environ={}).unseal(sealed, "f:K") is None
    with pytest.raises(PlatformError, match="names the current secrets key"):
        load_keyring(tmp_path, key_file=new, old_key_files=[new], environ={})


def test_a_cluster_needs_the_key_given_not_made_in_one_data_dir(tmp_path):
    with pytest.raises(PlatformError, match="--secrets-key-file") as info:
        load_keyring(tmp_path, environ={}, shared=True)
    assert "--db" in info.value.message and "openssl rand" in info.value.message
    assert not (tmp_path / "secrets.key").exists()
    key = new_key()
    ring = load_keyring(tmp_path, environ={ENV_KEY: encode_key(key)}, shared=True)
    assert ring.primary.fingerprint == SecretBox(key).fingerprint
