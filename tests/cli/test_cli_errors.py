import socket

import httpx
import pytest

from mist.cli import api
from mist.cli.output import fmt_ts


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("args", [("ls",), ("show", "hello"), ("invoke", "hello"), ("logs", "hello"), ("rm", "hello", "--yes")])
def test_an_unreachable_server_is_explained_without_a_traceback(cli, args):
    url = f"http://127.0.0.1:{closed_port()}"

    result = cli(*args, env={"MIST_URL": url})

    assert result.exit_code == 2
    assert result.stderr == f"error: cannot reach mist at {url} — is `mist up` running? (set MIST_URL to point elsewhere)\n"


def test_deploy_to_an_unreachable_server(cli, hello):
    url = f"http://127.0.0.1:{closed_port()}"

    result = cli("deploy", "hello", str(hello), env={"MIST_URL": url})

    assert result.exit_code == 2
    assert result.stderr.endswith(f"error: cannot reach mist at {url} — is `mist up` running? (set MIST_URL to point elsewhere)\n")


def test_the_default_url_is_local(monkeypatch):
    monkeypatch.delenv("MIST_URL", raising=False)

    assert api.base_url() == "http://127.0.0.1:8080"


def test_a_mist_url_without_scheme_is_explained(cli):
    result = cli("ls", env={"MIST_URL": "localhost:8080"})

    assert result.exit_code == 2
    assert result.stderr.startswith("error: MIST_URL='localhost:8080' is not a usable URL")


def test_an_error_answer_that_is_not_json_is_shown_as_text(cli, fake):
    fake.answer = httpx.Response(502, text="<html>Bad Gateway</html>")

    result = cli("ls")

    assert result.exit_code == 2
    assert result.stderr == "error: mist answered HTTP 502: <html>Bad Gateway</html>\n"


def test_help_lists_every_command_with_examples(cli):
    result = cli("--help")

    assert result.exit_code == 0
    for command in ("up", "deploy", "invoke", "ls", "show", "rm", "logs"):
        assert f" {command} " in result.stdout
        assert "Examples:" in cli(command, "--help").stdout
    assert "mist deploy hello ./hello" in result.stdout


def test_deploy_help_documents_the_handler_fallback(cli):
    text = " ".join(cli("deploy", "--help").stdout.split())

    assert "if exactly one top-level module defines handler, that one is used" in text


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("2026-11-26T04:01:02.123456+00:00", "2026-11-26T04:01:02Z"),
        ("2026-11-26T06:01:02+02:00", "2026-11-26T04:01:02Z"),
        ("2026-11-26T04:01:02Z", "2026-11-26T04:01:02Z"),
        (1795665662.5, "2026-11-26T04:01:02Z"),
        ("yesterday", "yesterday"),
        (None, "-"),
    ],
)
def test_timestamps_are_shown_in_utc_to_the_second(value, shown):
    assert fmt_ts(value) == shown
