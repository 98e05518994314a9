"""Secret values are masked in what a function prints and in its errors, and what is not is documented."""

import pytest

from mist.secrets.redact import MASK, MIN_LENGTH, Redactor
from mist.worker.types import InvokeResult, LogLine

PEM = "-----BEGIN KEY-----\nMIIBOgIBAAJBAKj34GkxFhD9\n0Lk+VyPC1JxQ2wWBaeJ3iA==\n-----END KEY-----\n"


@pytest.mark.parametrize(("values", "text", "masked"), [
    (["hunter22"], "password is hunter22.", "password is ***."),
    (["hunter22"], "hunter22hunter22", "******"),
    (["tok-1234", "tok-12345678"], "a tok-12345678 b tok-1234", "a *** b ***"),  # the longest first, whole
    (["a.b*c+d?"], "x a.b*c+d? y aXbbc+d", "x *** y aXbbc+d"),  # a value is text, not a pattern
    (["hunter22"], "HUNTER22 and hunter2", "HUNTER22 and hunter2"),  # only the exact value
    (["abc"], "abc abc", "abc abc"),  # shorter than MIN_LENGTH: not masked (documented)
    ([""], "anything", "anything"),
    (["s3cr3t-value"], "s3cr3t-", "s3cr3t-"),  # a piece of it: not masked (documented)
    ([PEM], "MIIBOgIBAAJBAKj34GkxFhD9", MASK),  # a multi-line value, line by line (log lines)
    ([PEM], "key: " + PEM, "key: ***"),  # and whole (an error message)
])
def test_every_occurrence_of_a_value_is_masked(values, text, masked):
    assert Redactor(values).text(text) == masked


def test_a_value_split_across_two_prints_is_not_masked_and_that_is_documented():
    value = "split-secret-value"
    r = Redactor([value])
    assert [r.text(value[:9]), r.text(value[9:])] == ["split-sec", "ret-value"]
    assert MIN_LENGTH == 4  # docs/secrets.md states both limits


def test_a_redactor_without_maskable_values_is_false_and_changes_nothing():
    r = Redactor(["ab", "x"])
    assert not r and r.text("ab x") == "ab x"


def test_an_invocation_result_is_masked_in_its_logs_and_its_error_but_not_its_return_value():
    result = InvokeResult(
        ok=False, payload=b'{"echo": "hunter22"}',
        error={"errorType": "ValueError", "errorMessage": "bad password hunter22",
               "stackTrace": ['  File "/var/task/main.py", line 3, in handler\n    x = "hunter22"\n']},
        logs=[LogLine(1.0, "stdout", "got hunter22"), LogLine(2.0, "stderr", "nothing here")],
    )
    Redactor(["hunter22"]).result(result)
    assert [line.text for line in result.logs] == ["got ***", "nothing here"]
    assert result.error == {"errorType": "ValueError", "errorMessage": "bad password ***",
                            "stackTrace": ['  File "/var/task/main.py", line 3, in handler\n    x = "***"\n']}
    assert result.payload == b'{"echo": "hunter22"}'
