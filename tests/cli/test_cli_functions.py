import json

import httpx
import pytest

from mist.cli import functions


def test_ls_with_nothing_deployed_says_how_to_deploy(cli, fake):
    result = cli("ls")

    assert result.exit_code == 0
    assert result.stdout == "No functions deployed yet. Deploy one with: mist deploy hello ./hello\n"


def test_ls_shows_a_row_per_function(cli, fake, hello):
    cli("deploy", "hello", str(hello))
    cli("deploy", "world", str(hello), "--memory", "512", "--timeout", "2.5")

    result = cli("ls")

    rows = [line.split() for line in result.stdout.splitlines()]
    assert rows == [
        ["NAME", "VERSION", "HANDLER", "MEMORY", "TIMEOUT", "UPDATED"],
        ["hello", "1", "main.handler", "128", "MB", "30", "s", "2026-11-26T04:01:01Z"],
        ["world", "1", "main.handler", "512", "MB", "2.5", "s", "2026-11-26T04:01:02Z"],
    ]


def test_ls_json_prints_the_api_answer(cli, fake, hello):
    cli("deploy", "hello", str(hello))

    result = cli("ls", "--json")

    functions = json.loads(result.stdout)["functions"]
    assert [(f["name"], f["latest_version"], f["latest"]["handler"]) for f in functions] == [("hello", 1, "main.handler")]


def test_show_prints_the_configuration_and_recent_invocations(cli, fake, hello):
    cli("deploy", "hello", str(hello), "--env", "GREETING=hi")
    cli("invoke", "hello")

    result = cli("show", "hello")

    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "hello  version 1"
    assert "  handler      main.handler" in lines
    assert "  env          GREETING=hi" in lines
    assert "  instances    min 0, max unlimited" in lines
    assert "  on failure   the function's dead-letter queue (mist dlq ls)" in lines
    assert "Recent invocations" in lines
    assert lines[-1].split() == ["inv-1", "1", "succeeded", "yes", "1.5", "ms", "2026-11-26T05:00:00Z"]
    assert [r.url.params["limit"] for r in fake.requests if r.method == "GET" and r.url.path.endswith("/invocations")][-1] == "5"
    assert "  secrets      -" in lines


def test_show_lists_secret_names_never_values(cli, fake, hello):
    cli("deploy", "hello", str(hello))
    fake.secrets["hello"] = ["DB_PASSWORD", "API_TOKEN"]

    assert "  secrets      API_TOKEN DB_PASSWORD" in cli("show", "hello").stdout.splitlines()
    assert [s["name"] for s in json.loads(cli("show", "hello", "--json").stdout)["secrets"]] == ["API_TOKEN", "DB_PASSWORD"]


def test_show_says_when_the_key_may_not_read_secrets(cli, fake, hello):
    cli("deploy", "hello", str(hello))
    real = fake.list_secrets
    fake.list_secrets = lambda request, name: httpx.Response(  # type: ignore[method-assign]
        403, json={"error": {"code": "Forbidden", "message": "role viewer may not read secrets"}})
    try:
        result = cli("show", "hello")
    finally:
        fake.list_secrets = real  # type: ignore[method-assign]

    assert result.exit_code == 0
    assert "  secrets      (not readable with this API key)" in result.stdout.splitlines()


def test_show_json_has_the_function_and_its_invocations(cli, fake, hello):
    cli("deploy", "hello", str(hello))

    out = json.loads(cli("show", "hello", "--json").stdout)

    assert out["function"]["latest"]["version"] == 1 and out["invocations"] == []


def test_show_of_an_unknown_function_exits_2(cli, fake):
    result = cli("show", "nope")

    assert result.exit_code == 2
    assert "function 'nope' does not exist" in result.stderr


def test_rm_yes_deletes_without_asking(cli, fake, hello):
    cli("deploy", "hello", str(hello))

    result = cli("rm", "hello", "--yes")

    assert result.exit_code == 0 and result.stdout == "Deleted hello\n"
    assert fake.functions == {}


def test_rm_does_not_ask_when_no_one_can_answer(cli, fake, hello):
    cli("deploy", "hello", str(hello))

    assert cli("rm", "hello").stdout == "Deleted hello\n"


@pytest.mark.parametrize(("answer", "code", "left"), [("n\n", 1, {"hello"}), ("y\n", 0, set())])
def test_rm_asks_on_a_terminal(cli, fake, hello, monkeypatch, answer, code, left):
    cli("deploy", "hello", str(hello))
    monkeypatch.setattr(functions, "interactive", lambda: True)

    result = cli("rm", "hello", input=answer)

    assert "Delete function hello and all its versions? [y/N]" in result.stdout
    assert result.exit_code == code
    assert set(fake.functions) == left


def test_rm_of_an_unknown_function_exits_2(cli, fake):
    result = cli("rm", "nope", "--yes")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: function 'nope' does not exist")
