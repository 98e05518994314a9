import json

import httpx
import pytest


@pytest.fixture
def deployed(cli, fake, hello):
    assert cli("deploy", "hello", str(hello)).exit_code == 0
    return fake


def test_invoke_prints_the_result_as_pretty_json(cli, deployed):
    result = cli("invoke", "hello", "--data", '{"name": "Ada"}')

    assert result.exit_code == 0
    assert result.stdout == '{\n  "greeting": "hello Ada"\n}\n'
    assert deployed.requests[-1].headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("args", "stdin", "expected"),
    [
        (("--data", "@event.json"), None, "hello Grace"),
        (("--data", "-"), '{"name": "Linus"}', "hello Linus"),
        (("-d", '{"name": "Ken"}'), None, "hello Ken"),
        ((), None, "hello None"),  # no --data: the event is null
    ],
)
def test_invoke_reads_the_event_from_each_source(cli, deployed, tmp_path, monkeypatch, args, stdin, expected):
    (tmp_path / "event.json").write_text('{"name": "Grace"}')
    monkeypatch.chdir(tmp_path)

    result = cli("invoke", "hello", *args, input=stdin)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"greeting": expected}


def test_invoke_without_data_sends_an_empty_body(cli, deployed):
    cli("invoke", "hello")

    assert deployed.requests[-1].content == b""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("{name: 1}", "error: the --data given is not valid JSON (line 1, column 2: Expecting property name"),
        ("", "error: the --data given is not valid JSON (line 1, column 1: Expecting value)"),
        ("@missing.json", "error: cannot read --data @missing.json: No such file or directory"),
    ],
)
def test_invoke_refuses_bad_data_before_sending(cli, deployed, tmp_path, monkeypatch, data, message):
    monkeypatch.chdir(tmp_path)
    sent = len(deployed.requests)

    result = cli("invoke", "hello", "--data", data)

    assert result.exit_code == 2
    assert result.stderr.startswith(message)
    assert len(deployed.requests) == sent


def test_a_function_error_prints_type_message_and_stack_trace(cli, fake, tmp_path):
    d = tmp_path / "boom"
    d.mkdir()
    (d / "main.py").write_text("def handler(event, context):\n    return 1 / 0\n")
    cli("deploy", "boom", str(d))

    result = cli("invoke", "boom")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith("ZeroDivisionError: division by zero\n")
    assert "line 2, in handler\n    return 1 / 0" in result.stderr


def test_a_platform_error_prints_its_message_and_exits_2(cli, fake):
    result = cli("invoke", "nope")

    assert result.exit_code == 2
    assert result.stderr == "error: function 'nope' does not exist; `mist ls` lists the deployed functions\n"


def test_a_full_queue_says_when_to_retry(cli, deployed):
    deployed.answer = httpx.Response(
        429, headers={"Retry-After": "2"},
        json={"error": {"code": "NoCapacity", "message": "the wait queue of 'hello' is full"}},
    )

    result = cli("invoke", "hello")

    assert result.exit_code == 2
    assert result.stderr == "error: the wait queue of 'hello' is full (retry after 2 s)\n"


def test_invoke_json_reports_the_invocation(cli, deployed):
    result = cli("invoke", "hello", "--data", '{"name": "Ada"}', "--json")

    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "invocation_id": "inv-1", "status_code": 200, "function_error": None, "result": {"greeting": "hello Ada"},
    }


def test_invoke_json_reports_a_function_error_and_exits_1(cli, deployed):
    result = cli("invoke", "hello", "--data", '"not an object"', "--json")

    assert result.exit_code == 1
    out = json.loads(result.stdout)
    assert out["status_code"] == 500 and out["function_error"] == "Unhandled"
    assert out["result"]["errorType"] == "AttributeError"


def test_invoke_runs_the_version_asked_for(cli, deployed, hello):
    (hello / "main.py").write_text("def handler(event, context):\n    return 'v2'\n")
    cli("deploy", "hello", str(hello))

    assert cli("invoke", "hello").stdout == '"v2"\n'
    assert json.loads(cli("invoke", "hello", "--version", "1").stdout) == {"greeting": "hello None"}
    assert deployed.requests[-1].url.params["version"] == "1"
