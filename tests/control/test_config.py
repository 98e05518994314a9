import pytest

from mist.errors import InvalidRequest
from mist.models import FunctionConfig


def test_defaults_are_the_documented_ones():
    cfg = FunctionConfig.from_json({})
    assert (cfg.handler, cfg.memory_mb, cfg.timeout_s, cfg.concurrency, cfg.env) == (None, 128, 30.0, 1, {})
    assert (cfg.min_instances, cfg.max_instances) == (0, None)
    assert (cfg.retries, cfg.max_event_age_s, cfg.on_success, cfg.on_failure) == (2, 21600, None, None)


def test_destinations_are_functions_or_queues_and_null_removes_one():
    cfg = FunctionConfig.from_json({"on_success": "function:next", "on_failure": "queue:failures"})
    assert (cfg.on_success, cfg.on_failure) == ("function:next", "queue:failures")
    assert FunctionConfig.from_json({"on_failure": None}, base=cfg).on_failure is None


def test_max_instances_can_be_lifted_again_with_null():
    base = FunctionConfig.from_json({"max_instances": 5})
    assert FunctionConfig.from_json({"max_instances": None}, base=base).max_instances is None


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"memory_mb": 63}, "memory_mb must be from 64 to 10240, got 63"),
        ({"memory_mb": 10241}, "memory_mb must be from 64 to 10240, got 10241"),
        ({"memory_mb": "128"}, "memory_mb must be a whole number"),
        ({"timeout_s": 0}, "timeout_s must be more than 0 and at most 900"),
        ({"timeout_s": 901}, "timeout_s must be more than 0 and at most 900"),
        ({"concurrency": 0}, "concurrency must be from 1 to 1000"),
        ({"handler": "main"}, "handler must look like module.function"),
        ({"handler": "main.1x"}, "is not a dotted Python name"),
        ({"env": {"1A": "x"}}, "env name '1A' is not valid"),
        ({"env": {"AWS_REGION": "x"}}, "is reserved"),
        ({"env": {"A": 1}}, "env value of A must be a string"),
        ({"memroy_mb": 1}, "unknown config key(s) memroy_mb"),
        ([], "config must be a JSON object"),
        ({"min_instances": -1}, "min_instances must be from 0 to 10000, got -1"),
        ({"max_instances": 0}, "max_instances must be from 1 to 10000, got 0"),
        ({"min_instances": 3, "max_instances": 2}, "min_instances (3) cannot be more than max_instances (2)"),
        ({"retries": 11}, "retries must be from 0 to 10, got 11"),
        ({"retries": -1}, "retries must be from 0 to 10, got -1"),
        ({"retries": 1.5}, "retries must be a whole number from 0 to 10"),
        ({"max_event_age_s": 59}, "max_event_age_s must be from 60 to 21600, got 59"),
        ({"max_event_age_s": 21601}, "max_event_age_s must be from 60 to 21600, got 21601"),
        ({"on_success": "lambda:x"}, "on_success must be function:NAME or queue:NAME"),
        ({"on_failure": "queue:"}, "on_failure must be function:NAME or queue:NAME"),
        ({"on_failure": "queue:Bad_Name"}, "got 'queue:Bad_Name'"),
        ({"on_success": 3}, "on_success must be function:NAME or queue:NAME"),
    ],
)
def test_bad_values_are_refused_naming_key_and_value(config, message):
    with pytest.raises(InvalidRequest) as info:
        FunctionConfig.from_json(config)
    assert message in info.value.message


def test_update_starts_from_the_previous_config():
    base = FunctionConfig("app.main", 256, 10.0, 4, {"A": "1"})
    cfg = FunctionConfig.from_json({"memory_mb": 512}, base=base)
    assert cfg == FunctionConfig("app.main", 512, 10.0, 4, {"A": "1"})



@pytest.mark.parametrize(
    ("rules", "canonical"),
    [
        (["API.example.com:443"], ("api.example.com:443",)),
        (["203.0.113.7"], ("203.0.113.7/32",)),
        (["203.0.113.7/24:5432"], ("203.0.113.0/24:5432",)),
        (["pypi.org:80-443", "pypi.org:80-443"], ("pypi.org:80-443",)),
        (["pypi.org:1-65535"], ("pypi.org",)),
        (["0.0.0.0/0"], ("0.0.0.0/0",)),
    ],
)
def test_egress_rules_are_stored_in_canonical_form(rules, canonical):
    assert FunctionConfig.from_json({"network": {"egress": rules}}).network == canonical


def test_network_none_removes_every_egress_rule():
    base = FunctionConfig.from_json({"network": {"egress": ["pypi.org:443"]}})
    assert FunctionConfig.from_json({}, base=base).network == ("pypi.org:443",)
    assert FunctionConfig.from_json({"network": "none"}, base=base).network == ()


@pytest.mark.parametrize(
    ("network", "message"),
    [
        ("all", 'network must be "none" or {"egress": [RULE, ...]}'),
        ({"egress": []}, 'the egress list is empty; use "none"'),
        ({"egress": ["x"] * 65}, "at most 64 egress rules, got 65"),
        ({"egress": ["127.0.0.1:5432"]}, "names the loopback network"),
        ({"egress": ["localhost:6379"]}, "'localhost' in egress rule 'localhost:6379' is not a host name"),
        ({"egress": ["[::1]:80"]}, "is IPv6; sandboxes have IPv4 egress only"),
        ({"egress": ["10.0.0.300"]}, "is not an IPv4 address or CIDR"),
        ({"egress": ["pypi.org:0"]}, "must be from 1 to 65535"),
        ({"egress": ["pypi.org:443-80"]}, "must be from 1 to 65535 (a range LOW-HIGH with LOW <= HIGH), got '443-80'"),
        ({"egress": ["pypi.org:https"]}, "must be a number or LOW-HIGH, got 'https'"),
        ({"egress": [443]}, "an egress rule must be HOST[:PORT] or CIDR[:PORT]"),
    ],
)
def test_bad_network_policies_are_refused_naming_the_rule(network, message):
    with pytest.raises(InvalidRequest) as info:
        FunctionConfig.from_json({"network": network})
    assert message in info.value.message
