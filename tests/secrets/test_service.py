"""SecretService: what a restart keeps, what a wrong key does, and how an old key is rotated out."""

import pytest

from mist.errors import SecretsUnavailable
from mist.sealing import SecretBox, new_key
from mist.secrets.keys import Keyring
from mist.secrets.service import SecretService
from mist.testing.secrets import MemorySecretStore


def service(store, key, old=()):
    return SecretService(store, Keyring(SecretBox(key), "the test key", tuple(SecretBox(k) for k in old)),
                         clock=lambda: 1000.0)


async def test_secrets_survive_a_restart_sealed_in_the_store():
    store, key = MemorySecretStore(), new_key()
    first = service(store, key)
    await first.start()
    await first.change("acme/hello", {"DB_PASSWORD": "correct horse", "TOKEN": "tok-1234"})
    assert all("horse" not in row.sealed for row in store.list_secrets())
    again = service(store, key)
    loaded = await again.start()
    assert (loaded.secrets, loaded.functions, loaded.resealed, loaded.unreadable) == (2, 1, 0, ())
    assert again.environment("acme/hello") == {"DB_PASSWORD": "correct horse", "TOKEN": "tok-1234"}
    assert again.environment("hello") is None
    assert again.redactor("acme/hello").text("pw: correct horse") == "pw: ***"


async def test_with_a_wrong_key_the_function_is_not_run_and_the_message_says_why_and_what_to_do():
    store = MemorySecretStore()
    first = service(store, new_key())
    await first.start()
    await first.change("hello", {"DB_PASSWORD": "correct horse", "TOKEN": "tok-1234"})
    await first.change("other", {"K": "value-of-other"})
    wrong = service(store, new_key())
    loaded = await wrong.start()
    assert sorted(loaded.unreadable) == [("hello", "DB_PASSWORD"), ("hello", "TOKEN"), ("other", "K")]
    with pytest.raises(SecretsUnavailable) as exc:
        wrong.environment("hello")
    message = exc.value.message
    assert "DB_PASSWORD, TOKEN do not open with the secrets key" in message and "the test key" in message
    assert "mist secret set hello" in message and "horse" not in message
    assert [(s.name, s.readable) for s in wrong.list("hello")] == [("DB_PASSWORD", False), ("TOKEN", False)]
    # setting them again (or removing them) makes the function runnable, with the new key
    await wrong.change("hello", {"DB_PASSWORD": "new horse", "TOKEN": None})
    assert wrong.environment("hello") == {"DB_PASSWORD": "new horse"}
    assert wrong.statistics().unreadable == 1  # "other" still waits for its key


async def test_starting_with_the_old_key_as_old_seals_everything_again_with_the_new_one():
    store, old, new = MemorySecretStore(), new_key(), new_key()
    first = service(store, old)
    await first.start()
    await first.change("hello", {"A_KEY": "value-a", "B_KEY": "value-b"})
    rotating = service(store, new, old=[old])
    loaded = await rotating.start()
    assert (loaded.resealed, loaded.unreadable) == (2, ())
    assert rotating.environment("hello") == {"A_KEY": "value-a", "B_KEY": "value-b"}
    after = service(store, new)  # the old key is no longer needed
    assert (await after.start()).unreadable == ()
    assert after.environment("hello") == {"A_KEY": "value-a", "B_KEY": "value-b"}


async def test_each_change_makes_a_new_revision_which_a_deleted_function_does_not_reset():
    s = service(MemorySecretStore(), new_key())
    await s.start()
    assert s.revision("hello") == 0
    await s.change("hello", {"A": "value-1"})
    r1 = s.revision("hello")
    await s.change("hello", {"A": "value-2"})
    r2 = s.revision("hello")
    await s.forget("hello")
    assert r2 > r1 > 0 and s.revision("hello") == r2 and s.list("hello") == [] and s.environment("hello") is None
    await s.change("hello", {"A": "value-3"})
    assert s.revision("hello") > r2


async def test_a_process_follows_secrets_changed_by_another_with_the_same_key():
    store, key = MemorySecretStore(), new_key()
    a, b = service(store, key), service(store, key)
    await a.start()
    await b.start()
    await a.change("acme/hello", {"TOKEN": "one"})
    assert b.environment("acme/hello") is None  # b answers from memory...
    assert await b.follow() == ["acme/hello"]  # ...until it follows the change
    assert b.environment("acme/hello") == {"TOKEN": "one"} and b.revision("acme/hello") > 0
    before = b.revision("acme/hello")
    assert await b.follow() == [] and await a.follow() == []  # nothing new; a's own change is no news to a
    await a.change("acme/hello", {"TOKEN": None})
    assert await b.follow() == ["acme/hello"]
    assert b.environment("acme/hello") is None and b.revision("acme/hello") > before


async def test_a_followed_secret_another_key_sealed_stops_the_function_saying_why():
    store = MemorySecretStore()
    a, b = service(store, new_key()), service(store, new_key())
    await a.start()
    await b.start()
    await a.change("hello", {"TOKEN": "one"})
    assert await b.follow() == ["hello"]
    with pytest.raises(SecretsUnavailable, match="TOKEN"):
        b.environment("hello")
