"""A change to a function's secrets is checked once, with messages that never quote a value."""

import pytest

from mist.errors import InvalidRequest, NotFound
from mist.secrets.model import PER_FUNCTION_MAX, VALUE_MAX, parse_patch

VALUE = "hunter2-the-value"


def test_a_patch_sets_strings_and_removes_nulls():
    assert parse_patch({"DB_PASSWORD": VALUE, "OLD": None, "empty": ""}, {"OLD"}) == (
        {"DB_PASSWORD": VALUE, "empty": ""}, ("OLD",))


@pytest.mark.parametrize(("patch", "says"), [
    ({}, "JSON object of names to values"),
    ([["A", "b"]], "JSON object of names to values"),
    ("A=b", "JSON object of names to values"),
    ({"1ABC": VALUE}, "secret name '1ABC' is not valid"),
    ({"A-B": VALUE}, "secret name 'A-B' is not valid"),
    ({"": VALUE}, "secret name '' is not valid"),
    ({"AWS_SECRET_ACCESS_KEY": VALUE}, "is reserved"),
    ({"mist_token": VALUE}, "is reserved"),
    ({"LAMBDA_X": VALUE}, "is reserved"),
    ({"A" * 129: VALUE}, "at most 128"),
    ({"A": 12345}, "must be a string (or null to remove it), got a JSON number"),
    ({"A": ["x"]}, "got a JSON array"),
    ({"A": True}, "got a JSON boolean"),
    ({"A": VALUE + "\x00"}, "NUL byte"),
    ({"A": VALUE + "\ud800"}, "lone surrogate"),
    ({"A": "x" * (VALUE_MAX + 1)}, f"at most {VALUE_MAX:,}"),
])
def test_a_bad_patch_is_refused_with_a_message_that_names_the_rule_not_the_value(patch, says):
    with pytest.raises(InvalidRequest) as exc:
        parse_patch(patch, set())
    assert says in exc.value.message
    assert VALUE not in exc.value.message and "x" * 100 not in exc.value.message


def test_removing_a_secret_the_function_does_not_have_is_not_found():
    with pytest.raises(NotFound) as exc:
        parse_patch({"NOPE": None}, {"OTHER"})
    assert "has no secret 'NOPE'" in exc.value.message


def test_a_function_has_at_most_so_many_secrets_after_the_change():
    existing = {f"S{i}" for i in range(PER_FUNCTION_MAX)}
    with pytest.raises(InvalidRequest, match=f"at most {PER_FUNCTION_MAX} secrets; this would make 101"):
        parse_patch({"ONE_MORE": "v"}, existing)
    assert parse_patch({"ONE_MORE": "v", "S0": None}, existing) == ({"ONE_MORE": "v"}, ("S0",))
    assert parse_patch({"S1": "replaced"}, existing) == ({"S1": "replaced"}, ())
