"""The in-sandbox runtime's Lambda mapping, exercised in-process (no sandbox)."""

import decimal
import os
import signal
import sys
import textwrap
import time
import uuid

import pytest

from mist.worker.runtime import LambdaContext, exception_error, load_handler, marshal
from mist.worker.sandbox import classify_exit, describe_exit


@pytest.fixture
def module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    names = []

    def write(source: str) -> str:
        name = f"mod_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def test_loads_a_dotted_handler(module):
    name = module("def handler(event, context):\n    return 1\n")
    function, error = load_handler(f"{name}.handler")
    assert error is None and function(None, None) == 1


def test_missing_dependency_is_an_import_module_error(module):
    name = module("import no_such_module_xyz\n")
    function, error = load_handler(f"{name}.handler")
    assert function is None
    assert error["errorType"] == "Runtime.ImportModuleError"
    assert error["errorMessage"] == f"Unable to import module '{name}': No module named 'no_such_module_xyz'"


def test_missing_module_is_an_import_module_error():
    _, error = load_handler("nope_not_here_module.handler")
    assert error["errorMessage"] == "Unable to import module 'nope_not_here_module': No module named 'nope_not_here_module'"


def test_syntax_error_names_module_file_and_line(module):
    name = module("x = 1\ndef handler(event, context)\n    return 1\n")
    _, error = load_handler(f"{name}.handler")
    assert error["errorType"] == "Runtime.UserCodeSyntaxError"
    assert error["errorMessage"].startswith(f"Syntax error in module '{name}': ")
    assert "line 2" in error["errorMessage"]
    assert f"{name}.py" in error["stackTrace"][0] and "Line 2" in error["stackTrace"][0]


def test_missing_handler_uses_lambdas_message(module):
    name = module("def handler(event, context):\n    return 1\n")
    _, error = load_handler(f"{name}.hndlr")
    assert error == {"errorType": "Runtime.HandlerNotFound",
                     "errorMessage": f"Handler 'hndlr' missing on module '{name}'", "stackTrace": []}


def test_handler_without_a_module_is_malformed():
    _, error = load_handler("handler")
    assert error["errorType"] == "Runtime.MalformedHandlerName"


def test_exception_during_import_is_reported_as_itself(module):
    name = module("raise RuntimeError('config missing')\n")
    _, error = load_handler(f"{name}.handler")
    assert (error["errorType"], error["errorMessage"]) == ("RuntimeError", "config missing")
    assert any(f"{name}.py" in line for line in error["stackTrace"])


def test_exception_shape_has_type_message_and_frames():
    def handler():
        return 1 / 0

    try:
        handler()
    except ZeroDivisionError as exc:
        error = exception_error(exc)
    assert error["errorType"] == "ZeroDivisionError"
    assert error["errorMessage"] == "division by zero"
    assert error["stackTrace"][-1].endswith("in handler\n    return 1 / 0\n")


@pytest.mark.parametrize(("value", "encoded"), [
    ({"a": [1, "é"]}, '{"a":[1,"é"]}'.encode()),
    (None, b"null"),
    (decimal.Decimal("2"), b"2"),
    (decimal.Decimal("2.5"), b"2.5"),
])
def test_return_values_are_json(value, encoded):
    assert marshal(value) == encoded


def test_bytes_cannot_be_marshalled():
    with pytest.raises(ValueError, match="^Unable to marshal response: Object of type bytes is not JSON serializable$"):
        marshal(b"raw")


def test_context_fields_and_remaining_time():
    assign = {"function_name": "hello", "version": 3, "memory_mb": 256, "log_stream": "2026/01/01/[3]s1"}
    ctx = LambdaContext("req-1", time.monotonic() + 2.0, assign)
    assert ctx.invoked_function_arn == "arn:mist:lambda:local:default:function:hello:3"
    assert (ctx.aws_request_id, ctx.function_version, ctx.memory_limit_in_mb, ctx.log_group_name) == (
        "req-1", "3", "256", "/mist/hello")
    assert 1500 < ctx.get_remaining_time_in_millis() <= 2000
    assert ctx.client_context is None and ctx.identity is None


@pytest.mark.parametrize(("status", "text"), [
    (3 << 8, "exit status 3"),
    (signal.SIGSEGV, "signal: segmentation fault"),
    (signal.SIGKILL, "signal: killed"),
    (None, "the sandbox exited"),
])
def test_exit_statuses_read_like_lambdas(status, text):
    assert describe_exit(status) == text


def test_an_oom_kill_wins_over_the_signal():
    error = classify_exit(signal.SIGKILL, oom_killed=True, memory_mb=128).to_lambda()
    assert error["errorType"] == "Runtime.OutOfMemory" and "128 MB" in error["errorMessage"]
    crash = classify_exit(os.WEXITSTATUS(0) | (3 << 8), oom_killed=False, memory_mb=128).to_lambda()
    assert crash == {"errorType": "Runtime.ExitError", "errorMessage": "Runtime exited with error: exit status 3",
                     "stackTrace": []}


def test_context_factory_builds_the_same_context():
    from mist.worker.runtime import LambdaContext

    assign = {"function_name": "hello", "version": 3, "memory_mb": 256, "log_stream": "2026/01/01/[3]s1"}
    deadline = time.monotonic() + 2.0
    fast = LambdaContext.factory(assign)("req-1", deadline)
    slow = LambdaContext("req-1", deadline, assign)
    names = ("aws_request_id", "request_id", "function_name", "function_version", "memory_limit_in_mb",
             "invoked_function_arn", "log_group_name", "log_stream_name", "client_context", "identity")
    assert {n: getattr(fast, n) for n in names} == {n: getattr(slow, n) for n in names}
    assert isinstance(fast, LambdaContext) and type(fast).__name__ == "LambdaContext"
    assert repr(fast) == repr(slow) and 1500 < fast.get_remaining_time_in_millis() <= 2000


@pytest.mark.parametrize("error", [None, {"errorType": "E", "errorMessage": "m", "stackTrace": []}])
@pytest.mark.parametrize("cid", ["12", "x-1"])
def test_result_frames_decode_to_the_same_header_either_way(cid, error):
    import json

    from mist.worker import protocol
    from mist.worker.runtime import result_frame

    (frame,) = protocol.FrameDecoder().feed(result_frame(cid, error, 0.123, 9, 1.5, 2.25, False, b'"v"'))
    assert frame.kind == protocol.RESULT
    assert frame.header == {"id": cid, "ok": error is None, "error": error, "d": 0.123, "m": 9, "s": 1.5,
                            "e": 2.25, "o": False}
    assert frame.payload == (b'"v"' if error is None else b"")
    assert json.loads(json.dumps(frame.header)) == frame.header


def test_output_pending_sees_bytes_waiting_in_a_pipe():
    from mist.worker.runtime import output_pending

    r, w = os.pipe()
    try:
        assert output_pending(w) is False
        os.write(w, b"x")
        assert output_pending(w) is True and output_pending(r) is True
        assert output_pending(None) is True
    finally:
        os.close(r)
        os.close(w)
    assert output_pending(w) is True  # closed: cannot tell, so the Worker reads the pipe


def test_marshal_reports_a_circular_value_and_then_works_again():
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference detected"):
        marshal({"a": loop})
    shared = [1]
    assert marshal({"x": shared, "y": shared}) == b'{"x":[1],"y":[1]}'
