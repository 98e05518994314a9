from decimal import Decimal

import pytest

from mist.errors import InvalidRequest
from mist.metering import plans
from mist.metering.plans import BillingConfig, TenantBilling


def test_without_a_plans_file_there_is_one_standard_plan_at_lambda_prices(tmp_path):
    config = plans.find(tmp_path, None)
    assert config.default_plan == "standard" and list(config.plans) == ["standard"]
    p = config.plans["standard"]
    assert (p.per_million_requests, p.per_gb_s, p.per_provisioned_gb_s, p.free_requests, p.free_gb_s, p.currency) == (
        Decimal("0.20"), Decimal("0.0000166667"), Decimal("0.0000041667"), 1_000_000, 400_000, "USD")


def test_the_plans_file_in_the_data_dir_is_used_and_an_explicit_one_wins(tmp_path):
    (tmp_path / "plans.toml").write_text('[plans.team]\nper_gb_s = "0.00002"\n')
    explicit = tmp_path / "other.toml"
    explicit.write_text('default_plan = "pro"\n[plans.pro]\nfree_requests = 0\n[plans.hobby]\n')
    assert plans.find(tmp_path, None).default_plan == "team"
    config = plans.find(tmp_path, explicit)
    assert config.default_plan == "pro" and set(config.plans) == {"pro", "hobby"}
    assert config.plans["pro"].free_requests == 0 and config.plans["pro"].per_gb_s == Decimal("0.0000166667")


def test_prices_written_as_toml_numbers_keep_their_decimal_digits(tmp_path):
    f = tmp_path / "plans.toml"
    f.write_text("[plans.standard]\nper_gb_s = 0.0000166667\nper_million_requests = 0.2\n")
    p = plans.load(f).plans["standard"]
    assert p.per_gb_s == Decimal("0.0000166667") and p.per_million_requests == Decimal("0.2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[plans.pro]\nper_gb_s = "-1"\n', "plans.pro.per_gb_s must be a number >= 0, got '-1'"),
        ('[plans.pro]\nper_gb_z = "1"\n', "plans.pro: unknown key(s) per_gb_z; known keys: per_million_requests"),
        ('[plans.pro]\nfree_requests = 1.5\n', "plans.pro.free_requests must be a whole number >= 0, got 1.5"),
        ('[plans.pro]\nfree_gb_s = true\n', "plans.pro.free_gb_s must be a number, got True"),
        ('[plans.pro]\ncurrency = "dollars"\n', "plans.pro.currency must be a 3-letter code like USD, got 'dollars'"),
        ('default_plan = "gold"\n[plans.pro]\n', "default_plan must be one of the plans (pro), got 'gold'"),
        ('[plans.a]\n[plans.b]\n', "default_plan must be one of the plans (a, b), got 'standard'"),
        ('[plans."Big Plan"]\n', "plan name 'Big Plan' is not valid"),
        ('currency = "USD"\n', "unknown key(s) currency; known keys: default_plan, plans"),
        ("[plans.pro\n", "is not valid TOML"),
    ],
)
def test_a_bad_plans_file_is_refused_naming_the_file_the_key_and_the_value(tmp_path, text, message):
    f = tmp_path / "plans.toml"
    f.write_text(text)
    with pytest.raises(InvalidRequest) as err:
        plans.load(f)
    assert message in err.value.message and str(f) in err.value.message


def test_a_missing_plans_file_is_named(tmp_path):
    with pytest.raises(InvalidRequest, match="plans file .*nope.toml does not exist"):
        plans.find(tmp_path, tmp_path / "nope.toml")


def test_a_tenant_cap_overrides_the_plan_cap_and_none_falls_back_to_it():
    capped = BillingConfig().plans["standard"].__class__("capped", monthly_spend_cap="500")
    assert TenantBilling("t").cap_micros(capped) == 500_000_000
    assert TenantBilling("t", monthly_spend_cap=Decimal("12.34")).cap_micros(capped) == 12_340_000
    assert TenantBilling("t").cap_micros(BillingConfig().plans["standard"]) is None


def test_a_plan_no_longer_configured_bills_at_the_default_plan():
    config = BillingConfig()
    assert config.plan("gone").name == config.plan(None).name == "standard"


@pytest.mark.parametrize(("value", "cap"), [("100.00", Decimal("100.00")), (5, Decimal(5)), ("none", None), (None, None),
                                            ("0", Decimal(0)), ("0.000001", Decimal("0.000001"))])
def test_spend_caps(value, cap):
    assert plans.spend_cap(value) == cap


@pytest.mark.parametrize("value", ["-1", "abc", "1.0000001", True, "NaN", [1]])
def test_a_bad_spend_cap_is_refused_with_an_example(value):
    with pytest.raises(InvalidRequest, match=r"monthly_spend_cap must be an amount >= 0 with at most 6 decimals \(e.g. 100.00\)"):
        plans.spend_cap(value)
