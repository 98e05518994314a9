"""Asynchronous invocations: what becomes of an event after each attempt, as pure functions.

    decide(policy, progress, outcome, now, draw=...) -> Decision     retry when, or finish how
    route(decision, function, on_success, on_failure) -> Route       where the record goes
    destination_record(...) -> bytes                                 Lambda's destination record
    async_slots(concurrency, max_instances, instances) -> int        runs of one function at once

An attempt ends in one of four outcomes:
  succeeded  the handler returned                  -> finished, condition Success
  failed     a function error (exception, timeout,  -> retried while retries are left and the
             out of memory, crash)                     retry would start before max_event_age_s
  error      a platform error (no capacity, a       -> retried without using up a retry, until
             sandbox that could not be built)          max_event_age_s (the event never ran)
  missing    the function (or its version) is gone -> finished at once, condition RetriesExhausted
A retry waits `mist.core.retry.backoff_s` (exponential, equal jitter): after the n-th function
error the n-th backoff; after platform errors the k-th, k counting attempts that were not
function errors, and never less than the platform's Retry-After hint.

Worked example (retries 2, backoff base 1 s, factor 2; max age 6 h): created at t=0, attempt 1
fails at t=0.1 -> retry at 0.1 + 0.5..1 s; attempt 2 fails at t=1 -> retry at 1 + 1..2 s;
attempt 3 fails -> no retry left: finished, condition RetriesExhausted, the record goes to the
on-failure destination (by default the function's dead-letter queue, status "dead-lettered").
With max_event_age_s 60 and 50 s of NoCapacity, a retry that would start after t=60 is not
scheduled: finished, condition EventAgeExceeded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone

from mist.core.retry import Backoff, backoff_s
from mist.models import qualify, split_id

SUCCEEDED, FAILED, ERROR, MISSING = "succeeded", "failed", "error", "missing"
DLQ = "dlq"  # the destination "the function's own dead-letter queue"


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 2
    max_event_age_s: float = 21_600.0
    backoff: Backoff = Backoff()


@dataclass(frozen=True)
class Progress:
    """The event as the attempt that just ended left it."""

    created_at: float
    attempt: int  # the attempt that just ended, from 1
    function_errors: int  # before this attempt


@dataclass(frozen=True)
class Decision:
    action: str  # "retry" | "succeed" | "fail"
    due_at: float | None  # when to retry
    function_errors: int  # including this attempt's
    condition: str | None  # Success | RetriesExhausted | EventAgeExceeded; None for a retry


def expired(policy: RetryPolicy, created_at: float, now: float) -> bool:
    """An event this old is not run (again)."""
    return now - created_at >= policy.max_event_age_s


def decide(
    policy: RetryPolicy, progress: Progress, outcome: str, now: float, *, draw: float, retry_after: float = 0.0
) -> Decision:
    """What becomes of the event after an attempt with `outcome`. `draw` in [0, 1) is the
    backoff's jitter; `retry_after` the platform's hint (NoCapacity) in seconds."""
    errors = progress.function_errors
    if outcome == SUCCEEDED:
        return Decision("succeed", None, errors, "Success")
    if outcome == MISSING:
        return Decision("fail", None, errors, "RetriesExhausted")
    if outcome == FAILED:
        errors += 1
        if errors > policy.retries:
            return Decision("fail", None, errors, "RetriesExhausted")
        delay = backoff_s(errors, draw=draw, policy=policy.backoff)
    elif outcome == ERROR:
        platform_failures = max(1, progress.attempt - errors)
        delay = max(retry_after, backoff_s(platform_failures, draw=draw, policy=policy.backoff))
    else:
        raise ValueError(f"unknown outcome {outcome!r}")
    due = now + delay
    if expired(policy, progress.created_at, due):
        return Decision("fail", None, errors, "EventAgeExceeded")
    return Decision("retry", due, errors, None)


@dataclass(frozen=True)
class Route:
    status: str  # the event's final status: succeeded | failed | dead-lettered
    destination: str | None  # "function:x" | "queue:y" | "dlq" | None (no record sent)
    kind: str | None  # "function" | "queue" | None
    target: str | None  # the function or queue (a dead-letter queue is "dlq:FUNCTION")


def route(decision: Decision, function: str, on_success: str | None, on_failure: str | None) -> Route:
    """Where a finished event's record goes. A failure without on_failure goes to the
    function's own dead-letter queue ("dead-lettered"); to on_failure it is "failed"."""
    tenant = split_id(function)[0]  # a destination names a function or queue of the same tenant
    if decision.action == "succeed":
        if on_success is None:
            return Route("succeeded", None, None, None)
        kind, _, target = on_success.partition(":")
        return Route("succeeded", on_success, kind, qualify(tenant, target))
    if on_failure is None:
        return Route("dead-lettered", DLQ, "queue", dlq_name(function))
    kind, _, target = on_failure.partition(":")
    return Route("failed", on_failure, kind, qualify(tenant, target))


def dlq_name(function: str) -> str:
    return f"dlq:{function}"


def async_slots(concurrency: int, max_instances: int | None, instances: int) -> int:
    """How many attempts of one function the dispatcher runs at once: `instances` instances'
    worth, never more than the function's max_instances allows, so asynchronous work leaves
    the rest of the machine (and the function's wait queue) to synchronous callers."""
    if max_instances is not None:
        instances = min(instances, max_instances)
    return max(1, concurrency * instances)


def destination_record(
    *,
    request_id: str,
    function_arn: str,
    condition: str,
    invoke_count: int,
    request_payload: bytes,
    executed_version: int | None,
    response_payload: bytes | None,
    function_error: bool,
    now: float,
) -> bytes:
    """Lambda's destination record, as JSON bytes. `executed_version` None: the function never
    ran (statusCode null); `response_payload` is the return value or the error, as JSON."""
    stamp = datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    record = {
        "version": "1.0",
        "timestamp": stamp,
        "requestContext": {
            "requestId": request_id,
            "functionArn": function_arn,
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": _json(request_payload),
        "responseContext": {
            "statusCode": None if executed_version is None else 200,
            "executedVersion": None if executed_version is None else str(executed_version),
            "functionError": "Unhandled" if function_error else None,
        },
        "responsePayload": None if response_payload is None else _json(response_payload),
    }
    return json.dumps(record, separators=(",", ":")).encode()


def function_arn(function: str, qualifier: int | None) -> str:
    """The ARN a function sees as context.invoked_function_arn (mist/worker/runtime.py)."""
    tenant, name = split_id(function)
    return f"arn:mist:lambda:local:{tenant}:function:{name}:{qualifier or '$LATEST'}"


def _json(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
