"""The fuzzer's check (loaded by `st run` through SCHEMATHESIS_HOOKS=tests.fuzz.checks): an answer
is mist's own, never a failure of mist's.

- No 5xx but those the API documents as something else than mist failing: 503 NoCapacity (no
  instance in time), and a function error (500 on invoke, 502 on the HTTP trigger, with
  X-Mist-Function-Error) of the kinds a fuzzed configuration legitimately causes: a timeout of
  a few microseconds, or too little memory. Any other function error of the fuzz target (which
  returns its event) would be mist breaking the function.
- Every error of the API (/v1/...) has mist's error body {"error": {"code", "message"}}.
"""

from __future__ import annotations

import json

import schemathesis

FUZZED_FUNCTION_ERRORS = {"Sandbox.Timedout", "Runtime.OutOfMemory"}


@schemathesis.check
def mist_answers_clearly(ctx, response, case):
    status = response.status_code
    text = response.text[:400]
    if status >= 500:
        if status == 503 and '"NoCapacity"' in text:
            return None
        if status in (500, 502) and "x-mist-function-error" in {k.lower() for k in response.headers}:
            error_type = _json(response.content).get("errorType")
            if error_type in FUZZED_FUNCTION_ERRORS:
                return None
            raise AssertionError(f"the fuzz target failed with {error_type}: {text}")
        raise AssertionError(f"mist answered {status}: {text}")
    if status >= 400 and case.path.startswith("/v1/"):
        error = _json(response.content).get("error")
        if not (isinstance(error, dict) and isinstance(error.get("code"), str) and isinstance(error.get("message"), str)):
            raise AssertionError(f"an error of {status} without mist's error body: {text}")
    return None


def _json(data: bytes) -> dict:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@schemathesis.hook
def map_query(ctx, query):
    """`GET .../logs?follow=true` streams for as long as the client reads (tested in tests/e2e):
    the fuzzer asks for the history only."""
    if isinstance(query, dict) and "follow" in query and ctx.operation is not None \
            and ctx.operation.path.endswith("/logs"):
        return {k: v for k, v in query.items() if k != "follow"}
    return query
