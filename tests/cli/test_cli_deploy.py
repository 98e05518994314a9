import json
import os
import zipfile
from pathlib import Path

from mist.control import packaging


def test_deploy_prints_the_created_version(cli, fake, hello):
    result = cli("deploy", "hello", str(hello))

    assert result.exit_code == 0, result.output
    assert result.stdout == "Deployed hello version 1 (main.handler, 128 MB, 30 s)\n"
    assert "Validated 1 file" in result.stderr
    assert fake.configs[-1] == {}  # the server applies its defaults
    assert fake.requests[-1].url.params["stream"] == "true"


def test_deploy_sends_only_the_options_given(cli, fake, hello):
    result = cli("deploy", "hello", str(hello), "--memory", "256", "--timeout", "2.5", "--env", "A=1", "--env", "B=x=y")

    assert result.exit_code == 0, result.output
    assert result.stdout == "Deployed hello version 1 (main.handler, 256 MB, 2.5 s)\n"
    assert fake.configs[-1] == {"memory_mb": 256, "timeout_s": 2.5, "env": {"A": "1", "B": "x=y"}}


def test_each_deploy_creates_the_next_version(cli, fake, hello):
    cli("deploy", "hello", str(hello))
    result = cli("deploy", "hello", str(hello), "--concurrency", "4")

    assert result.stdout == "Deployed hello version 2 (main.handler, 128 MB, 30 s)\n"


def test_deploy_json_prints_only_the_version(cli, fake, hello):
    result = cli("deploy", "hello", str(hello), "--json")

    assert result.exit_code == 0
    version = json.loads(result.stdout)
    assert version["name"] == "hello" and version["version"] == 1 and version["handler"] == "main.handler"
    assert result.stderr == ""


def test_deploy_shows_pip_output_while_installing_dependencies(cli, fake, hello):
    (hello / "requirements.txt").write_text("six==1.16.0\nrequests\n")

    result = cli("deploy", "hello", str(hello))

    assert result.exit_code == 0
    assert "Installing dependencies (layer ab12cd34ef56)\n  Collecting six==1.16.0\n  Collecting requests\n" in result.stderr


def test_deploy_error_event_prints_message_and_traceback_and_exits_1(cli, fake, tmp_path):
    archive = tmp_path / "broken.zip"
    with zipfile.ZipFile(archive, "w") as zf:  # a .zip is not checked locally: the server finds it
        zf.writestr("main.py", "def handler(event, context):\n    return (\n")

    result = cli("deploy", "hello", str(archive))

    assert result.exit_code == 1
    assert "error: syntax error in main.py line 2" in result.stderr
    assert 'File "main.py", line 2' in result.stderr and "SyntaxError" in result.stderr
    assert "Deployed" not in result.stdout


def test_deploy_errors_are_red_on_a_terminal(cli, fake, tmp_path):
    archive = tmp_path / "broken.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("main.py", "x = (\n")

    result = cli("deploy", "hello", str(archive), env={"NO_COLOR": None, "FORCE_COLOR": "1"})

    assert result.exit_code == 1
    assert "\x1b[31merror: syntax error in main.py" in result.stderr


def test_deploy_checks_the_handler_before_uploading(cli, fake, hello):
    result = cli("deploy", "hello", str(hello), "--handler", "main.nope")

    assert result.exit_code == 1
    assert "Handler 'nope' missing on module 'main'" in result.stderr
    assert fake.requests == []


def test_deploy_falls_back_to_the_only_module_defining_handler(cli, fake, tmp_path):
    d = tmp_path / "fn"
    d.mkdir()
    (d / "app.py").write_text("def handler(event, context):\n    return 1\n")
    (d / "util.py").write_text("X = 1\n")

    result = cli("deploy", "hello", str(d))

    assert result.stdout == "Deployed hello version 1 (app.handler, 128 MB, 30 s)\n"
    assert "handler" not in fake.configs[-1]  # the server finds it the same way


def test_deploy_uploads_a_zip_unchanged(cli, fake, hello, tmp_path):
    archive = tmp_path / "hello.zip"
    stats = packaging.zip_directory(hello, archive)

    result = cli("deploy", "hello", str(archive), "--json")

    assert json.loads(result.stdout)["code_sha256"] == stats.sha256


def test_deploy_rejects_a_bad_name_without_calling_the_server(cli, fake, hello):
    result = cli("deploy", "Hello_World", str(hello))

    assert result.exit_code == 2
    assert result.stderr.startswith("error: invalid function name 'Hello_World': use 1 to 63 characters")
    assert fake.requests == []


def test_deploy_refuses_symlinks_leaving_the_directory(cli, fake, hello):
    os.symlink("/etc/passwd", hello / "passwd")

    result = cli("deploy", "hello", str(hello))

    assert result.exit_code == 1
    assert "symlinks that leave the directory: passwd -> /etc/passwd" in result.stderr
    assert fake.requests == []


def test_deploy_reports_a_config_the_server_refuses(cli, fake, hello):
    result = cli("deploy", "hello", str(hello), "--memory", "5")

    assert result.exit_code == 1
    assert result.stderr.endswith("\nerror: memory_mb 5 is out of range: use 64-10240\n")


def test_deploy_explains_a_malformed_env_option(cli, fake, hello):
    result = cli("deploy", "hello", str(hello), "--env", "GREETING")

    assert result.exit_code == 2
    assert "--env 'GREETING' is not KEY=VALUE" in result.stderr


def test_deploy_of_a_missing_directory(cli, fake, tmp_path):
    result = cli("deploy", "hello", str(tmp_path / "nope"))

    assert result.exit_code == 2
    assert "nope does not exist; pass the function's directory or a .zip of it" in result.stderr


def test_deploy_stream_that_ends_early_is_an_error(cli, fake, hello):
    import httpx

    fake.answer = httpx.Response(200, headers={"Content-Type": "application/x-ndjson"},
                                 content=b'{"event": "received", "bytes": 10}\n')

    result = cli("deploy", "hello", str(hello))

    assert result.exit_code == 2
    assert "the deploy stream ended before the deploy finished" in result.stderr


def test_deploy_sends_instance_limits(cli, fake, hello):
    result = cli("deploy", "hello", str(hello), "--min-instances", "2", "--max-instances", "10")

    assert result.exit_code == 0, result.output
    assert fake.configs[-1] == {"min_instances": 2, "max_instances": 10}


def test_deploy_sends_the_egress_rules_given(cli, fake, hello):
    result = cli("deploy", "hello", str(hello), "--egress", "api.example.com:443", "--egress", "203.0.113.0/24")

    assert result.exit_code == 0, result.output
    assert fake.configs[-1] == {"network": {"egress": ["api.example.com:443", "203.0.113.0/24"]}}


def test_deploy_refuses_a_bad_egress_rule_before_uploading(cli, fake, hello):
    result = cli("deploy", "hello", str(hello), "--egress", "127.0.0.1:5432")

    assert result.exit_code == 2
    assert "names the loopback network" in result.stderr
    assert fake.requests == []


def test_deploy_refuses_network_none_together_with_egress(cli, fake, hello):
    result = cli("deploy", "hello", str(hello), "--network", "none", "--egress", "pypi.org:443")

    assert result.exit_code == 2
    assert "--network none and --egress contradict each other" in result.stderr


def test_update_replaces_the_egress_rules_and_show_lists_them(cli, fake, hello):
    assert cli("deploy", "hello", str(hello)).exit_code == 0
    result = cli("update", "hello", "--egress", "pypi.org:443")
    assert result.exit_code == 0, result.output
    assert "hello version 2" in result.stdout
    assert fake.configs[-1] == {"network": {"egress": ["pypi.org:443"]}}
    assert "network      egress to pypi.org:443" in cli("show", "hello").stdout

    assert cli("update", "hello", "--network", "none").exit_code == 0
    assert fake.configs[-1] == {"network": "none"}
    assert "network      none" in cli("show", "hello").stdout


def test_update_without_options_changes_nothing(cli, fake, hello):
    assert cli("deploy", "hello", str(hello)).exit_code == 0
    result = cli("update", "hello")

    assert result.exit_code == 2
    assert "nothing to change" in result.stderr
    assert len(fake.functions["hello"]) == 1
