"""Redactor: masks a function's secret values in what it prints and in its errors (pure).

Each instance's SandboxSpec carries the Redactor of the values in its environment, so the
worker masks exactly what that instance could print (mist/worker/worker.py `Worker.invoke`),
before the log lines and the error reach the records, `mist logs --follow`, the caller or
mist's own log. Every occurrence of a value is replaced with `***`, longest values first:

    >>> Redactor(["hunter22", "tok-123"]).text("login hunter22 with tok-123")
    'login *** with ***'

What it cannot catch (docs/secrets.md says so too):
  - values shorter than MIN_LENGTH characters (masking "on" or "1" would mangle every log);
  - a value printed in pieces (`print(s[:4]); print(s[4:])`) or transformed (reversed,
    base64, URL- or JSON-escaped, upper-cased...);
  - a value spanning lines is masked whole in an error message, and line by line in the logs
    (a log line is one line of output), each line of it of at least MIN_LENGTH characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace

from mist.worker.types import InvokeResult

MASK = "***"
MIN_LENGTH = 4


class Redactor:
    __slots__ = ("_pattern",)

    def __init__(self, values: Iterable[str]) -> None:
        needles: set[str] = set()
        for value in values:
            for part in (value, *value.splitlines()):
                if len(part) >= MIN_LENGTH:
                    needles.add(part)
        ordered = sorted(needles, key=lambda n: (-len(n), n))  # the longest first: no half-masked value
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern is not None else text

    def value(self, value: object) -> object:
        """Every string inside a JSON-like value (an error's message, type and stack trace) masked."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        return value

    def result(self, result: InvokeResult) -> None:
        """Mask an invocation's log lines and error in place (its return value is the caller's
        data and stays as it is)."""
        if self._pattern is None:
            return
        search = self._pattern.search
        result.logs = [replace(line, text=self.text(line.text)) if search(line.text) else line
                       for line in result.logs]
        if result.error is not None:
            result.error = self.value(result.error)  # type: ignore[assignment]
