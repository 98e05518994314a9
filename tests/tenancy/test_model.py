"""API key format, hashing and tenant limits validation (pure)."""

import pytest

from mist.errors import InvalidRequest
from mist.tenancy.model import (
    ApiKey,
    TenantLimits,
    digest,
    key_id_of,
    new_key,
    same_digest,
)
from mist.tenancy.roles import Role


def test_a_new_key_carries_its_id_and_only_its_digest_is_kept():
    key_id, key = new_key()
    assert key.startswith(f"mist_{key_id}_") and len(key) >= 50
    assert key_id_of(key) == key_id
    assert same_digest(digest(key), digest(key)) and not same_digest(digest(key), digest(key + "x"))
    assert key not in digest(key)


@pytest.mark.parametrize("bad", ["", "mist_", "Bearer x", "mist_ABCDEF012345_x", "mist_0123456789ab-x",
                                 "mist_0123456789ab", "other_0123456789ab_xyz"])
def test_strings_that_are_not_mist_keys_have_no_id(bad):
    assert key_id_of(bad) is None


def test_key_states_follow_revocation_and_expiry():
    key = ApiKey("k", "t", Role.VIEWER, "", "d", created_at=0, expires_at=100)
    assert key.usable(99) and key.state(99) == "active"
    assert not key.usable(100) and key.state(100) == "expired"
    revoked = ApiKey("k", "t", Role.VIEWER, "", "d", created_at=0, revoked_at=5)
    assert not revoked.usable(1) and revoked.state(1) == "revoked"


def test_limits_change_only_what_is_given_and_null_clears():
    base = TenantLimits(rate_per_s=10, burst=20, max_concurrency=5)
    out = TenantLimits.from_json({"burst": None, "max_queued": 0, "weight": 3}, base)
    assert out == TenantLimits(rate_per_s=10, burst=None, max_concurrency=5, max_queued=0, weight=3)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"rate_per_s": 0}, "rate_per_s must be a number above 0"),
        ({"rate_per_s": "fast"}, "rate_per_s"),
        ({"burst": 0}, "burst must be a whole number from 1"),
        ({"max_concurrency": 1.5}, "max_concurrency"),
        ({"weight": 0}, "weight must be a whole number from 1 to 1000"),
        ({"weight": None}, "weight must be a whole number from 1 to 1000"),
        ({"rate": 1}, "unknown limit(s) rate"),
        ([], "limits must be a JSON object"),
    ],
)
def test_bad_limits_are_refused_naming_key_and_value(body, words):
    with pytest.raises(InvalidRequest) as exc:
        TenantLimits.from_json(body)
    assert words in exc.value.message
