"""What `mist usage`, `mist invoice` and `mist billing` refuse before asking the server (the
answers themselves are tested against a real `mist up` in tests/e2e/test_billing.py)."""


def test_usage_takes_one_output_format(cli, fake):
    result = cli("usage", "--json", "--csv")
    assert result.exit_code == 2 and "--json and --csv cannot be used together" in result.output
    assert fake.requests == []


def test_invoice_takes_one_output_format(cli, fake):
    result = cli("invoice", "acme", "2026-11", "--csv", "--json")
    assert result.exit_code == 2 and fake.requests == []


def test_billing_set_needs_something_to_set(cli, fake):
    result = cli("billing", "set", "acme")
    assert result.exit_code == 2 and "nothing to set: pass --plan NAME and/or --cap AMOUNT" in result.output
    assert fake.requests == []


def test_billing_set_sends_default_and_none_as_nulls(cli, fake):
    cli("billing", "set", "acme", "--plan", "default", "--cap", "none")
    (request,) = fake.requests
    assert (request.method, request.url.path, request.content) == (
        "PUT", "/v1/billing/tenants/acme", b'{"plan":null,"monthly_spend_cap":null}')
